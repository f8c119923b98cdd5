"""The guardrail hook on ``tools/call``: describe the call, ask the enforcer, carry out.

The enforcer decides; this module only translates. A refusal becomes a tool
result with ``isError`` (the model reads why), never a forwarded call; a hold
becomes the hold payload (:func:`~spanguard.guardrails.hold_result_payload`:
the approval id and the command to approve it). Token usage the caller reports
in ``params._meta["spanguard/usage"]`` is described to the budget guards as the
model call that led to this tool call. A post-call read-back verifier is
performed by the proxy (``read_back``) and judged by the verify guard.
Enforcement fails closed: a guard that crashes refuses the call rather than
letting it through unchecked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.trace import Span

from spanguard import semconv as sc
from spanguard.guardrails import (
    Decision,
    Enforcer,
    GuardrailViolation,
    HoldError,
    HoldPending,
    HoldRejected,
    ModelCall,
    ModelUsage,
    RunState,
    ToolCall,
    ToolOutcome,
    VerificationResult,
    VerifyGuard,
    hold_result_payload,
    record_verification,
    wait_for_decision,
)
from spanguard.mcp_bridge._proxy_messages import RequestId, dumps, tool_error_result
from spanguard.spantree import mark_error

logger = logging.getLogger("spanguard.mcp_bridge.proxy")

USAGE_META_KEY = "spanguard/usage"
"""``params._meta`` key of a ``tools/call`` carrying the caller's model usage since its
previous tool call: ``{"input_tokens": N, "output_tokens": M}`` (optional ``"model"``,
``"cost_usd"``). The proxy charges it to the session's budgets and refuses the call
when the budget would not have admitted that model call."""

VERIFICATION_META_KEY = "spanguard/verification"
"""Result ``_meta`` key of a verified tool's status: ``{"status": ..., "detail": ...}``."""

AsyncReadBack = Callable[[str, Mapping[str, Any]], Awaitable[Any]]


class _WaitStopped(Exception):
    """The proxy is stopping: a ``--hold-wait`` in progress gives up at once."""


class ToolGate:
    """One client session's guardrail state in front of the wrapped server.

    ``hold_wait`` > 0 makes a held call wait (off the event loop) up to that many
    seconds for a checker's decision, then ask the guards again.
    """

    def __init__(self, enforcer: Enforcer, state: RunState, *, hold_wait: float = 0.0) -> None:
        self.enforcer = enforcer
        self.state = state
        self.hold_wait = hold_wait
        verification = enforcer.policy.verify
        self._verification = verification if verification and verification.verifiers else None
        self._stop = threading.Event()

    def check(self, call: ToolCall, span: Span,
              usage: Mapping[str, Any] | None = None) -> GuardrailViolation | None:
        """None to forward the call, or why it must not run (a hold included)."""
        try:
            if usage is not None:
                self._charge(usage, span)
            self.enforcer.before_tool_call(self.state, call, span)
        except GuardrailViolation as exc:
            return exc
        except Exception as exc:
            logger.exception("guardrail check failed for tool %s; refusing the call", call.tool)
            mark_error(span, exc, "guardrail_error")
            failure = GuardrailViolation(f"the guardrail check failed ({type(exc).__name__}: "
                                         f"{exc}); the call was not forwarded")
            failure.guard, failure.error_type = "guardrail", "guardrail_error"
            return failure
        return None

    def _charge(self, usage: Mapping[str, Any], span: Span) -> None:
        """The reported usage as one model call: checked, then charged either way."""
        model = usage.get("model")
        tokens_in, tokens_out = _count(usage.get("input_tokens")), _count(
            usage.get("output_tokens"))
        cost = usage.get("cost_usd")
        call = ModelCall(model if isinstance(model, str) else None,
                         estimated_input_tokens=tokens_in)
        spent = ModelUsage(tokens_in, tokens_out,
                           float(cost) if isinstance(cost, (int, float))
                           and not isinstance(cost, bool) else None)
        try:
            self.enforcer.before_model_call(self.state, call, span)
        finally:
            # The caller spent these tokens whatever the answer: the run's totals stay true.
            self.enforcer.after_model_call(self.state, call, spent, span)

    def waits_for(self, violation: GuardrailViolation) -> HoldPending | None:
        """The hold to wait on under ``--hold-wait``, else None (answer at once)."""
        if self.hold_wait > 0 and isinstance(violation, HoldPending):
            return violation
        return None

    async def wait(self, held: HoldPending) -> GuardrailViolation | None:
        """Wait (in a thread, not on the event loop) for a checker's decision.

        Returns the answer when there is nothing to run (rejected, still pending
        when time is up, or the proxy is stopping), or None when it was decided
        otherwise and the guards must be asked again (an approval is consumed
        by that check, not here).
        """
        def sleep(seconds: float) -> None:
            if self._stop.wait(seconds):
                raise _WaitStopped
        try:
            record = await asyncio.to_thread(wait_for_decision, held.hold_id,
                                             self.hold_wait, sleep=sleep)
        except _WaitStopped:
            return held
        if record.status == "rejected":
            return HoldRejected(record)
        if record.status == "pending":
            return held
        return None

    def refusal(self, request_id: RequestId, call: ToolCall, violation: GuardrailViolation,
                span: Span) -> bytes:
        """The result frame for a call that did not run; marks the span."""
        mark_error(span, None, violation.error_type)
        if isinstance(violation, HoldError):
            span.set_attribute(sc.HOLD_ID, violation.hold_id)
            span.set_attribute(sc.HOLD_STATUS, "held" if isinstance(violation, HoldPending)
                               else violation.hold.status)
            return dumps({"jsonrpc": "2.0", "id": request_id,
                          "result": hold_result_payload(violation)})
        reason = str(violation)
        return tool_error_result(
            request_id, f"spanguard refused the call to tool {call.tool!r}: {reason}",
            {"spanguard": {"refused": True, "tool": call.tool, "guard": violation.guard,
                           "error_type": violation.error_type, "reason": reason}})

    def read_back_request(self, call: ToolCall) -> tuple[str, dict[str, Any]] | None:
        """The read-back the policy's verifier for this tool needs, if any."""
        if self._verification is None:
            return None
        try:
            return self._verification.read_back_request(call.tool, call.arguments)
        except KeyError:  # a placeholder names no argument: the verifier reports unknown
            return None

    async def after(self, call: ToolCall, result: Any, is_error: bool, span: Span,
                    read_back: AsyncReadBack | None = None
                    ) -> tuple[list[Decision], VerificationResult | None]:
        """:meth:`settle`, after making the read-back the tool's verifier needs.

        The read-back goes through ``read_back`` (the upstream); the guards then
        judge its answer as if they had made the call themselves.
        """
        fetched: Callable[[str, Mapping[str, Any]], Any] | None = None
        request = self.read_back_request(call) if not is_error else None
        if request is not None and read_back is not None:
            try:
                answer: Any = await read_back(*request)
            except Exception as exc:
                answer = exc
            fetched = _replay(request, answer)
        return self.settle(call, result, is_error, span, fetched)

    def settle(self, call: ToolCall, result: Any, is_error: bool, span: Span,
               read_back: Callable[[str, Mapping[str, Any]], Any] | None = None
               ) -> tuple[list[Decision], VerificationResult | None]:
        """Post-call decisions that did not confirm success, and the verification result."""
        try:
            decisions = self.enforcer.after_tool_call(
                self.state, call, ToolOutcome(result, is_error=is_error, read_back=read_back),
                span)
        except Exception as exc:
            logger.exception("post-call guardrail failed for tool %s", call.tool)
            mark_error(span, exc, "guardrail_error")
            return [Decision("deny", "guardrail", f"post-call check failed: {exc}",
                             error=exc)], None
        failed = []
        checked: VerificationResult | None = None
        for decision in decisions:
            if decision.guard == VerifyGuard.name:
                status = decision.attributes.get(sc.VERIFICATION_STATUS, "unknown")
                checked = VerificationResult(call.tool, status, decision.reason)
                record_verification(span, checked)
                if not checked.confirmed:
                    failed.append(decision)
            elif not decision.allowed:
                mark_error(span, None, getattr(decision.error, "error_type",
                                               "guardrail_violation"))
                failed.append(decision)
        return failed, checked

    def end(self) -> None:
        self._stop.set()
        try:
            self.enforcer.end_run(self.state)
        except Exception:
            logger.exception("guardrail end_run failed")


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _replay(request: tuple[str, Mapping[str, Any]],
            answer: Any) -> Callable[[str, Mapping[str, Any]], Any]:
    """A synchronous read-back that hands the verifier what the proxy already fetched."""
    def read_back(tool: str, arguments: Mapping[str, Any]) -> Any:
        if (tool, dict(arguments)) != (request[0], request[1]):
            raise LookupError(f"read-back {tool} was not fetched by the proxy")
        if isinstance(answer, Exception):
            raise answer
        return answer
    return read_back


def flagged_result(result: Mapping[str, Any], failed: list[Decision],
                   verification: VerificationResult | None = None) -> dict[str, Any]:
    """The upstream's result with the post-call outcome; an error if a check failed.

    Content is kept (nothing the server said is lost). A verification status goes
    in ``_meta["spanguard/verification"]``; a failed check turns the result into
    an error with a text block naming it: an unverified action is never reported
    as success.
    """
    flagged = dict(result)
    if verification is not None:
        meta = dict(flagged.get("_meta") or {})
        meta[VERIFICATION_META_KEY] = {"status": verification.status,
                                       "detail": verification.detail}
        flagged["_meta"] = meta
    if not failed:
        return flagged
    reasons = "; ".join(f"{d.guard}: {d.reason or d.kind}" for d in failed)
    content = list(result.get("content") or [])
    unconfirmed = any(d.guard == VerifyGuard.name for d in failed)
    what = "not confirmed" if unconfirmed else "post-call check failed"
    content.append({"type": "text", "text": f"spanguard: {what} ({reasons})"})
    flagged["content"] = content
    flagged["isError"] = True
    return flagged
