"""``ToolGate``: the guardrail hook on MCP ``tools/call``, one for both MCP paths.

``instrument_server`` (an SDK-built server, in process) and the stdio proxy
(``spanguard mcp wrap``, any server) each describe a call as a
:class:`~spanguard.guardrails.steps.ToolCall` and hand it here. The gate owns
everything that decides and answers, so the two paths cannot drift apart:

1. Before the call: the model usage the caller reports in
   ``params._meta["spanguard/usage"]`` is checked and charged as one model call
   (a report that is not a table of whole-number counts is refused with
   ``invalid_usage``, never charged as 0), then the policy's guards judge the
   tool call. A refusal or a hold becomes the
   result the caller sends instead (:mod:`spanguard.mcp_bridge.guard`), and the
   span gets ``error.type``: the violation's own (``held_for_approval``,
   ``hold_rejected``, ``hold_approval_used``, ``loop_budget_exceeded``, ...), or
   ``guardrail_error`` when a guard crashed (enforcement fails closed: the call
   is refused). With ``hold_wait`` a held call first waits, in a worker thread,
   for a checker's decision.
2. The caller runs the tool (the proxy forwards it upstream; the middleware
   calls the rest of the server's chain).
3. After the call: the read-back the policy's verifier needs is made through
   the caller's ``read_back`` (another ``tools/call`` on the same server: the
   proxy sends it upstream, ``instrument_server`` calls the server's own
   handler), traced as a CLIENT span under the call's span; the guards judge;
   findings go in ``_meta["spanguard/guardrail"]`` and an unconfirmed action
   (``unverified_action``) or a failed post-call check is never reported as a
   success.

The guards' memory is one :class:`~spanguard.guardrails.steps.RunState` per MCP
session, which the gate starts and ends for its caller.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from functools import partial
from typing import Any

from spanguard.extras import missing_extra

try:
    import anyio.to_thread
except ModuleNotFoundError as exc:
    raise missing_extra("the MCP bridge", exc, "mcp") from exc

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, format_trace_id

from spanguard import semconv as sc
from spanguard.attributes import tool_attributes
from spanguard.config import resolve_tracer_provider
from spanguard.errors import ConfigError
from spanguard.guardrails.approvals import wait_for_decision
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.holds import HoldError, HoldPending, HoldRejected, default_identity
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.steps import (
    Decision,
    ModelCall,
    RunState,
    ToolCall,
    ToolOutcome,
)
from spanguard.guardrails.usage import usage_report
from spanguard.guardrails.verify import VerifyGuard, record_verification, verification_of
from spanguard.hashing import payload_hash
from spanguard.mcp_bridge._protocol import error_code
from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation
from spanguard.mcp_bridge.guard import outcome_payload, refusal_payload
from spanguard.spantree import mark_error

__all__ = [
    "GUARDRAIL_ERROR",
    "TOOL_ERROR",
    "USAGE_META_KEY",
    "AsyncReadBack",
    "ToolGate",
    "mark_tool_result",
]

logger = logging.getLogger("spanguard.mcp_bridge")

USAGE_META_KEY = "spanguard/usage"
"""``params._meta`` key of a ``tools/call`` carrying the caller's model usage since its
previous tool call: ``{"input_tokens": N, "output_tokens": M}`` (whole numbers up to
10^9; optional ``"model"``, ``"cost_usd"``). It is charged to the session's budgets,
and the call is refused when the budget would not have admitted that model call, or
when the report is not valid (``error.type`` ``invalid_usage``; nothing is charged)."""

TOOL_ERROR = "tool_error"
"""``error.type`` of a call whose tool answered ``isError`` itself."""

GUARDRAIL_ERROR = "guardrail_error"
"""``error.type`` of a call refused because a guard crashed."""

STATUS_OK, STATUS_ERROR, STATUS_REFUSED = "ok", "error", "refused"

AsyncReadBack = Callable[[str, Mapping[str, Any]], Awaitable[Any]]
"""``(tool, arguments) -> wire result``: another ``tools/call`` on the same server."""

_MAX_RUNS = 4096


class GuardrailCrashed(GuardrailViolation):
    """A guard raised something other than a refusal; the call is refused (fail closed)."""

    guard = "guardrail"
    error_type = GUARDRAIL_ERROR

    def __init__(self, error: Exception, consequence: str) -> None:
        # The type only: a guard's exception message may quote the call's arguments.
        super().__init__(f"the guardrail check failed ({type(error).__name__}), {consequence}")


class _WaitStopped(Exception):
    """The gate is closing or the wait was cancelled: stop polling at once."""


class ToolGate:
    """The policy's guards in front of one MCP server, for many sessions.

    ``policy`` is a :class:`~spanguard.guardrails.policy.Policy`, a path to a
    TOML file, or None to read ``SPANGUARD_POLICY`` (no policy: :attr:`active`
    is false and callers skip the gate). ``identity`` is the maker of held
    calls (default: the OS user). ``hold_wait`` > 0 makes a held call wait up to
    that many seconds for a checker's decision before answering "held".
    ``server_name`` is the identity of the server the gate stands in front of:
    every call it judges goes to that server (``ToolCall.server``), so a hold,
    its approval and its summary name it, and an approval given for one server
    never runs a call on another.
    """

    def __init__(self, policy: Policy | str | os.PathLike[str] | None = None, *,
                 tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None,
                 identity: str | None = None,
                 hold_wait: float = 0.0,
                 server_name: str | None = None) -> None:
        if not hold_wait >= 0:
            raise ConfigError("hold_wait", f"must be 0 or more seconds, got {hold_wait!r}")
        provider = resolve_tracer_provider(tracer_provider)
        self.policy = load_policy(policy)
        # No policy, no guards: not even ones an Enforcer would build for an empty Policy.
        self.enforcer = Enforcer(self.policy, provider, meter_provider,
                                 guards=() if self.policy is None else None)
        # A hold wait polls the store the hold guard wrote the request to.
        store = self.policy.store if self.policy is not None else None
        self._store_url = store.url if store is not None else None
        self.identity = identity if identity is not None else default_identity()
        self.hold_wait = hold_wait
        self.server_name = server_name
        self.tools = ToolAnnotations()
        verification = self.policy.verify if self.policy is not None else None
        self._verification = verification if verification and verification.verifiers else None
        # Guards with an after_tool_call hook: without any, nothing reads a tool's result.
        self.reads_results = any(type(guard).after_tool_call is not Guard.after_tool_call
                                 for guard in self.enforcer.guards)
        self._tracer = provider.get_tracer("spanguard.mcp_bridge",
                                           schema_url=sc.SEMCONV_SCHEMA_URL)
        self._runs: OrderedDict[Hashable, RunState] = OrderedDict()
        self._waits: set[threading.Event] = set()

    @property
    def active(self) -> bool:
        """Whether any guard runs; an inactive gate changes nothing and callers skip it."""
        return self.enforcer.active

    # --- sessions -------------------------------------------------------------------

    def session_run(self, key: Hashable, ids: Correlation, span: Span | None) -> RunState:
        """The run of the session named ``key``, kept until :meth:`close`.

        ``span`` is the call's span; a new run records its trace id. The least
        recently used of more than 4096 kept sessions is ended, so a server that
        sees endless distinct session ids keeps bounded memory.
        """
        run = self._runs.get(key)
        if run is not None:
            self._runs.move_to_end(key)
            return run
        run = self.start_run(key, ids, span)
        self._runs[key] = run
        if len(self._runs) > _MAX_RUNS:
            self.end_run(self._runs.popitem(last=False)[1])
        return run

    def start_run(self, key: Hashable, ids: Correlation, span: Span | None) -> RunState:
        """A run the caller keeps and ends itself (:meth:`end_run`), e.g. per connection."""
        context = span.get_span_context() if span is not None else None
        trace_id = format_trace_id(context.trace_id) if context and context.is_valid else None
        return self.enforcer.start_run(key, identity=self.identity, session=ids.session,
                                       user=ids.user, tenant=ids.tenant, trace_id=trace_id)

    def end_run(self, run: RunState) -> None:
        try:
            self.enforcer.end_run(run)
        except Exception:
            logger.exception("spanguard: guardrail end_run failed")

    def close(self) -> None:
        """End every kept session's run and stop hold waits in progress."""
        for stop in list(self._waits):
            stop.set()
        runs, self._runs = list(self._runs.values()), OrderedDict()
        for run in runs:
            self.end_run(run)

    # --- before the call --------------------------------------------------------------

    async def admit(self, run: RunState, call: ToolCall, span: Span,
                    meta: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """None to run the tool, else the wire result to answer with instead.

        :meth:`check`, then (``hold_wait``) :meth:`wait` and check again, then
        :meth:`refuse`: the whole before-call path for a caller that may await.
        """
        violation = self.check(run, call, span, meta)
        held = self.waits_for(violation)
        if held is not None:
            violation = await self.wait(held)
            if violation is None:
                violation = self.check(run, call, span)
        return None if violation is None else self.refuse(call, violation, span)

    def check(self, run: RunState, call: ToolCall, span: Span,
              meta: Mapping[str, Any] | None = None) -> GuardrailViolation | None:
        """None to run the call, or why it must not run (a hold included).

        ``meta`` is the request's ``_meta``; its usage, if any, is charged first.
        """
        if call.server is None:
            call.server = self.server_name
        if call.schema is None:
            call.schema = self.tools.schema(call.tool)
        try:
            if meta and USAGE_META_KEY in meta:
                self._charge(run, meta[USAGE_META_KEY], span)
            self.enforcer.before_tool_call(run, call, span)
        except GuardrailViolation as violation:
            return violation
        except Exception as exc:
            logger.exception("spanguard: guardrail check failed on tool %r; refusing it",
                             call.tool)
            return GuardrailCrashed(exc, "so the call was refused")
        return None

    def _charge(self, run: RunState, report: object, span: Span) -> None:
        """The reported usage as one model call: checked, then charged either way (a
        report that is not valid is refused and charges nothing)."""
        model, spent = usage_report(report, f'_meta["{USAGE_META_KEY}"]')
        call = ModelCall(model, estimated_input_tokens=spent.input_tokens)
        try:
            self.enforcer.before_model_call(run, call, span)
        finally:
            # The caller spent these tokens whatever the answer: the run's totals stay true.
            self.enforcer.after_model_call(run, call, spent, span)

    def waits_for(self, violation: GuardrailViolation | None) -> HoldPending | None:
        """The hold to wait on (``hold_wait`` > 0 and the call is held), else None."""
        if self.hold_wait > 0 and isinstance(violation, HoldPending):
            return violation
        return None

    async def wait(self, held: HoldPending) -> GuardrailViolation | None:
        """Wait (in a worker thread, not on the event loop) for a checker's decision.

        Returns the answer when there is nothing to run (rejected, still pending
        when time is up, or the gate is closing), or None when it was decided
        otherwise and the guards must be asked again (an approval is consumed by
        that check, not here). A cancelled wait stops polling at once.
        """
        stop = threading.Event()
        self._waits.add(stop)

        def sleep(seconds: float) -> None:
            if stop.wait(seconds):
                raise _WaitStopped

        try:
            record = await anyio.to_thread.run_sync(
                partial(wait_for_decision, held.hold_id, self.hold_wait,
                        store_url=self._store_url, sleep=sleep),
                abandon_on_cancel=True)
        except _WaitStopped:
            return held
        finally:
            stop.set()
            self._waits.discard(stop)
        if record.status == "rejected":
            return HoldRejected(record)
        if record.status == "pending":
            return held
        return None

    def refuse(self, call: ToolCall, violation: GuardrailViolation, span: Span) -> dict[str, Any]:
        """The wire result for a call that did not run; marks its span."""
        span.set_attributes({sc.TOOL_RESULT_STATUS: STATUS_REFUSED,
                             sc.GUARDRAIL_NAME: violation.guard})
        if isinstance(violation, HoldError):
            span.set_attributes({sc.HOLD_ID: violation.hold_id, sc.HOLD_STATUS: "held"
                                 if isinstance(violation, HoldPending) else violation.hold.status})
        mark_error(span, None, violation.error_type)
        return refusal_payload(violation, call.tool)

    # --- after the call -----------------------------------------------------------------

    def needs_read_back(self, call: ToolCall, result: Mapping[str, Any]) -> bool:
        """Whether :meth:`settle` will make a read-back (callers may defer the answer)."""
        return not _is_error(result) and self._read_back_request(call) is not None

    async def settle(self, run: RunState, call: ToolCall, result: Mapping[str, Any],
                     span: Span, read_back: AsyncReadBack) -> dict[str, Any] | None:
        """The post-call findings: None to send the tool's result as it is, else the result.

        Makes the read-back the tool's verifier needs through ``read_back`` first;
        the guards then judge its answer as if they had made the call themselves.
        """
        request = self._read_back_request(call) if not _is_error(result) else None
        if request is None:
            return self.settle_now(run, call, result, span)
        answer = await self._fetch(request, read_back, span)
        return self.settle_now(run, call, result, span, _replay(request, answer))

    def settle_now(self, run: RunState, call: ToolCall, result: Mapping[str, Any], span: Span,
                   read_back: Callable[[str, Mapping[str, Any]], Any] | None = None,
                   ) -> dict[str, Any] | None:
        """:meth:`settle` without a read-back (when :meth:`needs_read_back` is false)."""
        outcome = ToolOutcome(result, is_error=_is_error(result), read_back=read_back)
        try:
            decisions = self.enforcer.after_tool_call(run, call, outcome, span)
        except Exception as exc:
            logger.exception("spanguard: post-call guardrail failed on tool %r", call.tool)
            crashed = GuardrailCrashed(exc, "so the result is not reported as a success")
            decisions = [Decision("deny", crashed.guard, str(crashed), error=crashed)]
        if not decisions:
            return None
        answer = outcome_payload(result, decisions)
        if answer is not None:
            _mark_findings(span, call.tool, decisions, answer)
        return answer

    def _read_back_request(self, call: ToolCall) -> tuple[str, dict[str, Any]] | None:
        if self._verification is None:
            return None
        try:
            return self._verification.read_back_request(call.tool, call.arguments)
        except KeyError:  # a placeholder names no argument: the verifier reports unknown
            return None

    async def _fetch(self, request: tuple[str, dict[str, Any]], read_back: AsyncReadBack,
                     parent: Span) -> Any:
        """The read-back's answer (or the exception it raised), as a CLIENT span."""
        tool, arguments = request
        attributes = tool_attributes(tool, arguments_hash=payload_hash(arguments))
        attributes[sc.MCP_METHOD_NAME] = "tools/call"
        span = self._tracer.start_span(f"tools/call {tool}", trace.set_span_in_context(parent),
                                       kind=SpanKind.CLIENT, attributes=attributes)
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                answer = await read_back(tool, arguments)
        except Exception as exc:
            # No exception message: a protocol error may quote the arguments.
            code = error_code(exc)
            mark_error(span, None, str(code) if code is not None else type(exc).__qualname__)
            return exc
        finally:
            span.end()
        if _is_error(answer):
            mark_error(span, None, TOOL_ERROR)
        return answer


def mark_tool_result(span: Span, result: object) -> None:
    """The tool's own outcome on its span: ``ok``, or ``error`` with ``tool_error``."""
    if _is_error(result):
        span.set_attribute(sc.TOOL_RESULT_STATUS, STATUS_ERROR)
        mark_error(span, None, TOOL_ERROR)
    else:
        span.set_attribute(sc.TOOL_RESULT_STATUS, STATUS_OK)


def _mark_findings(span: Span, tool: str, decisions: list[Decision],
                   answer: Mapping[str, Any]) -> None:
    """Verification status and failed post-call checks on the call's span."""
    record_verification(span, verification_of(tool, decisions))
    for decision in decisions:
        if decision.guard != VerifyGuard.name and not decision.allowed:
            mark_error(span, None, getattr(decision.error, "error_type", "guardrail_violation"))
    if answer.get("isError") is True:
        span.set_attribute(sc.TOOL_RESULT_STATUS, STATUS_ERROR)


def _is_error(result: object) -> bool:
    if isinstance(result, dict):  # the wire form, nearly always: skip the ABC check
        return result.get("isError") is True
    return isinstance(result, Mapping) and result.get("isError") is True


def _replay(request: tuple[str, Mapping[str, Any]],
            answer: Any) -> Callable[[str, Mapping[str, Any]], Any]:
    """A synchronous read-back that hands the verifier what the gate already fetched."""
    def read_back(tool: str, arguments: Mapping[str, Any]) -> Any:
        if (tool, dict(arguments)) != (request[0], request[1]):
            raise LookupError(f"read-back {tool} was not fetched by the MCP bridge")
        if isinstance(answer, Exception):
            raise answer
        return answer
    return read_back
