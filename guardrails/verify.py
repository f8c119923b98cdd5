"""Post-action verification: a tool's own success is not proof the action happened.

A verifier per tool checks the state of the world after the call:

* in Python, a function ``(arguments, result) -> "verified" | "failed" | "unknown"``;
* in the policy file (for MCP servers), a read-back call and a check::

    [verify]
    hold_on_failure = true
    [verify.git_commit]
    call = "git_log"
    arguments = { repo_path = "{repo_path}" }
    expect_contains = "{message}"

  ``{name}`` is replaced by the verified call's argument ``name``. The adapter
  performs the read-back through :data:`ReadBack` (``(tool, arguments) ->
  result``) or :data:`AsyncReadBack`; this module never talks to a server itself.

The status goes on the tool span as ``verification.status``
(:func:`record_verification`); ``failed`` and ``unknown`` set the span to ERROR and
are reported as not confirmed; with ``hold_on_failure`` the next calls of that
tool are held (by the hold guard) until one verifies. A tool without a verifier
gets no status at all, never "verified". Calls that reported an error themselves
are not verified: they are already not a success.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry.trace import Span, Status, StatusCode

from spanguard import semconv as sc
from spanguard.errors import ConfigError
from spanguard.guardrails import _parse
from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.audit_keys import AuditKeys
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.gating import gate_for
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.steps import Decision, RunState, ToolCall, ToolOutcome
from spanguard.guardrails.stores import Store, open_store

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy

VerificationStatus = Literal["verified", "failed", "unknown"]
STATUSES: tuple[VerificationStatus, ...] = ("verified", "failed", "unknown")
VerifierFn = Callable[[Mapping[str, Any], Any], str]
ReadBack = Callable[[str, Mapping[str, Any]], Any]
AsyncReadBack = Callable[[str, Mapping[str, Any]], Awaitable[Any]]
GUARD_NAME = "verify"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class VerificationResult:
    tool: str
    status: VerificationStatus
    detail: str = ""

    @property
    def confirmed(self) -> bool:
        return self.status == "verified"


class VerificationFailed(GuardrailViolation):
    """The action could not be confirmed (``failed`` or ``unknown``)."""

    guard = GUARD_NAME
    error_type = "unverified_action"

    def __init__(self, result: VerificationResult) -> None:
        self.result = result
        super().__init__(f"{result.tool} was not confirmed: verification "
                         f"{result.status}{': ' + result.detail if result.detail else ''}")


def result_text(result: Any) -> str:
    """Text of a tool result: a string, MCP ``CallToolResult`` JSON or object, a message."""
    if isinstance(result, str):
        return result
    if isinstance(result, Mapping):
        if "content" in result:
            return result_text(result["content"])
        if "text" in result:
            return str(result["text"])
        return str(dict(result))
    if isinstance(result, (list, tuple)):
        return "\n".join(result_text(item) for item in result)
    for attribute in ("text", "content"):
        value = getattr(result, attribute, None)
        if isinstance(value, (str, list, tuple)):
            return result_text(value)
    return str(result)


def result_is_error(result: Any) -> bool:
    if isinstance(result, Mapping):
        return bool(result.get("isError") or result.get("is_error"))
    return bool(getattr(result, "is_error", False) or getattr(result, "isError", False)
                or getattr(result, "status", None) == "error")


def _render(template: Any, arguments: Mapping[str, Any]) -> Any:
    """``"{name}"`` -> the argument itself; ``"x {name}"`` -> text; tables recurse."""
    if isinstance(template, Mapping):
        return {k: _render(v, arguments) for k, v in template.items()}
    if isinstance(template, list):
        return [_render(v, arguments) for v in template]
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template)
    if whole:
        return arguments[whole.group(1)]
    return _PLACEHOLDER.sub(lambda m: str(arguments[m.group(1)]), template)


@dataclass(frozen=True)
class ReadBackCheck:
    """Call ``call`` with rendered ``arguments``; require ``expect_contains`` in its text."""

    call: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    expect_contains: str | None = None

    def __post_init__(self) -> None:
        source = "ReadBackCheck"
        _parse.text(self.call, "call", source)
        _parse.table(self.arguments, "arguments", source)
        _parse.optional_text(self.expect_contains, "expect_contains", source)

    def request(self, arguments: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The read-back call to make; KeyError if a placeholder names no argument."""
        return self.call, dict(_render(self.arguments, arguments))

    def judge(self, arguments: Mapping[str, Any], read: Any) -> VerificationResult:
        if result_is_error(read):
            return VerificationResult("", "unknown", f"read-back {self.call} failed: "
                                      f"{result_text(read)[:200]}")
        if self.expect_contains is None:
            return VerificationResult("", "verified", f"read-back {self.call} succeeded")
        expected = str(_render(self.expect_contains, arguments))
        if expected in result_text(read):
            return VerificationResult("", "verified", f"{self.call} shows the change")
        return VerificationResult("", "failed", f"{self.call} does not show the change")


Verifier = VerifierFn | ReadBackCheck


@dataclass(frozen=True)
class Verification:
    """The policy part: ``verifiers`` by tool name, and whether failure holds the tool."""

    verifiers: Mapping[str, Verifier] = field(default_factory=dict)
    hold_on_failure: bool = False

    def __post_init__(self) -> None:
        source = "Verification"
        for tool, verifier in _parse.table(self.verifiers, "verifiers", source).items():
            if not isinstance(verifier, ReadBackCheck) and not callable(verifier):
                raise ConfigError(source, f"verifiers.{tool} must be a function or a "
                                          f"ReadBackCheck, got {verifier!r}")
        _parse.flag(self.hold_on_failure, "hold_on_failure", source)

    def with_verifier(self, tool: str, verifier: Verifier) -> Verification:
        return replace(self, verifiers={**self.verifiers, tool: verifier})

    def watched_tools(self) -> tuple[str, ...]:
        return tuple(self.verifiers) if self.hold_on_failure else ()

    def read_back_request(self, tool: str,
                          arguments: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        verifier = self.verifiers.get(tool)
        if not isinstance(verifier, ReadBackCheck):
            return None
        return verifier.request(arguments)

    def verify(self, tool: str, arguments: Mapping[str, Any], result: Any,
               read_back: ReadBack | None = None) -> VerificationResult | None:
        """None when the tool has no verifier; otherwise a status, never an exception."""
        verifier = self.verifiers.get(tool)
        if verifier is None:
            return None
        try:
            if isinstance(verifier, ReadBackCheck):
                if read_back is None:
                    return VerificationResult(tool, "unknown",
                                              "no read-back available in this adapter")
                read_tool, read_args = verifier.request(arguments)
                return replace(verifier.judge(arguments, read_back(read_tool, read_args)),
                               tool=tool)
            return _function_result(tool, verifier(arguments, result))
        except Exception as exc:  # a verifier that crashes proves nothing
            return VerificationResult(tool, "unknown", f"verifier raised {exc!r}")

    async def averify(self, tool: str, arguments: Mapping[str, Any], result: Any,
                      read_back: AsyncReadBack | None = None) -> VerificationResult | None:
        """:meth:`verify` with an async read-back, for adapters that run on an event loop."""
        verifier = self.verifiers.get(tool)
        if not isinstance(verifier, ReadBackCheck) or read_back is None:
            return self.verify(tool, arguments, result)
        try:
            read_tool, read_args = verifier.request(arguments)
            read = await read_back(read_tool, read_args)
            return replace(verifier.judge(arguments, read), tool=tool)
        except Exception as exc:
            return VerificationResult(tool, "unknown", f"read-back raised {exc!r}")


def _function_result(tool: str, value: object) -> VerificationResult:
    for status in STATUSES:
        if value == status:
            return VerificationResult(tool, status)
    return VerificationResult(tool, "unknown", f"verifier returned {value!r}")


def verification_of(tool: str, decisions: Sequence[Decision]) -> VerificationResult | None:
    """The verification among ``Enforcer.after_tool_call``'s decisions, if any ran."""
    for decision in decisions:
        if decision.guard == GUARD_NAME:
            status = decision.attributes.get(sc.VERIFICATION_STATUS)
            return VerificationResult(tool, status if status in STATUSES else "unknown",
                                      decision.reason)
    return None


def verification_attributes(result: VerificationResult) -> dict[str, Any]:
    """The status and reason as tool-span attributes (and the 0.x name, one release)."""
    attributes: dict[str, Any] = {sc.VERIFICATION_STATUS: result.status,
                                  _DEPRECATED_STATUS: result.status}
    if result.detail:
        attributes[sc.VERIFICATION_REASON] = result.detail
    return attributes


_DEPRECATED_STATUS = sc.DEPRECATED_NAMES[sc.VERIFICATION_STATUS]


def record_verification(span: Span | None, result: VerificationResult | None) -> None:
    """Put the status and reason on the tool span; anything but verified makes it ERROR."""
    if result is None or span is None or not span.is_recording():
        return
    span.set_attributes(verification_attributes(result))
    if not result.confirmed:
        span.set_attribute(sc.ERROR_TYPE, VerificationFailed.error_type)
        span.set_status(Status(StatusCode.ERROR, str(VerificationFailed(result))))


class VerifyGuard(Guard):
    """Runs the tool's verifier after the call, audits it, and suspends on failure."""

    name = GUARD_NAME

    def __init__(self, verification: Verification, *, store: Store | None = None,
                 store_url: str | None = None, approvals: Approvals | None = None,
                 audit_keys: AuditKeys | None = None) -> None:
        """Audits and suspensions go to ``approvals``, else ``store``, else
        ``open_store(store_url)``, opened at the first verification; audit records
        are signed with ``audit_keys``' writer key when it names one."""
        self.verification = verification
        self._store = store
        self._store_url = store_url
        self._approvals = approvals
        self._audit_keys = audit_keys

    @property
    def approvals(self) -> Approvals:
        if self._approvals is None:
            store = self._store if self._store is not None else open_store(self._store_url)
            signer = self._audit_keys.signer() if self._audit_keys is not None else None
            self._approvals = Approvals.over(store, signer=signer)
        return self._approvals

    def after_tool_call(self, run: RunState, call: ToolCall,
                        outcome: ToolOutcome) -> Decision | None:
        if outcome.is_error or gate_for(call.tool, call.call_id) is not None:
            return None  # not a success; or a gate around the call verifies it (gating.py)
        result = self.verification.verify(call.tool, call.arguments, outcome.result,
                                          outcome.read_back)
        return self.settle(result, maker=run.identity, trace_id=run.trace_id)

    def settle(self, result: VerificationResult | None, *, maker: str | None = None,
               trace_id: str | None = None) -> Decision | None:
        """Audit a result and apply ``hold_on_failure``; the decision reports it."""
        if result is None:
            return None
        self.approvals.audit.append(f"verification.{result.status}", actor=maker,
                                    subject=result.tool, detail=result.detail,
                                    trace_id=trace_id)
        if self.verification.hold_on_failure:
            if result.confirmed:
                self.approvals.store.lift(result.tool)
            else:
                self.approvals.store.suspend(result.tool, result.detail or result.status)
        return Decision("report", GUARD_NAME, result.detail, verification_attributes(result),
                        None if result.confirmed else VerificationFailed(result))


_READ_BACK_KEYS = ("call", "arguments", "expect_contains")


def parse_verify_table(table: Mapping[str, Any], source: str) -> Verification:
    """``[verify]``: ``hold_on_failure`` and one ``[verify.<tool>]`` read-back per tool."""
    verifiers: dict[str, Verifier] = {}
    for tool, spec in table.items():
        if tool == "hold_on_failure":
            continue
        where = f"{source}.{tool}"
        body = _parse.table(spec, tool, where)
        _parse.check_keys(body, _READ_BACK_KEYS, where)
        arguments = _parse.table(body.get("arguments", {}), "arguments", where)
        verifiers[tool] = _parse.in_table(where, ReadBackCheck, body.get("call"),
                                          dict(arguments), body.get("expect_contains"))
    return _parse.in_table(source, Verification, verifiers, table.get("hold_on_failure", False))


def build_verify_guards(policy: Policy, store: Store | None = None) -> list[Guard]:
    """One guard when the policy verifies any tool; it audits to ``store``, else to
    the policy's store (opened at the first verification)."""
    if policy.verify is None or not policy.verify.verifiers:
        return []
    url = policy.store.url if policy.store is not None else None
    return [VerifyGuard(policy.verify, store=store, store_url=url, audit_keys=policy.audit)]
