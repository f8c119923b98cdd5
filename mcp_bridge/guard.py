"""Guardrail answers in MCP's own idiom: tool results, never protocol errors.

The one renderer of what a guarded ``tools/call`` returns, used by
:class:`~spanguard.mcp_bridge.gate.ToolGate` for both ``instrument_server`` and
the stdio proxy, so a refusal, a hold or a failed check reads the same (text,
``structuredContent``, ``_meta``) whichever path produced it. Everything here
is the wire form (camelCase JSON, as the proxy sends it and as the SDK
serializes a ``CallToolResult``).

- A call that did not run is an ``isError`` result, as the MCP spec asks for
  tool-level failures: the model reads why and can adapt, and the client session
  stays healthy. A refusal carries ``structuredContent["spanguard"]``; a held,
  rejected or spent call carries the hold payload
  (:func:`~spanguard.guardrails.holds.hold_result_payload`:
  ``structuredContent["spanguard_hold"]`` with the approval command). Clients do
  not validate ``structuredContent`` of error results against the tool's output
  schema.
- After a call, the guards' findings go in ``_meta["spanguard/guardrail"]``:
  ``{"verification": {"status", "detail"}}`` when the tool has a verifier, and
  ``{"decisions": [{"guard", "decision", "reason"}, ...]}`` for other guards'
  decisions that were not a plain allow. An action that was not confirmed, or a
  post-call guard that refused, turns the result into ``isError`` with one text
  block saying why, after the tool's own content (nothing the tool said is lost).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spanguard.guardrails.enforcer import withheld_result
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.holds import HoldError, hold_result_payload
from spanguard.guardrails.steps import Decision
from spanguard.guardrails.verify import VerificationResult, VerifyGuard, verification_of

if TYPE_CHECKING:
    from mcp.types import CallToolResult

__all__ = [
    "DECISIONS_META_KEY",
    "GUARDRAIL_META_KEY",
    "REFUSAL_KEY",
    "apply_decisions",
    "outcome_payload",
    "refusal_payload",
    "refusal_result",
]

REFUSAL_KEY = "spanguard"
"""Key of the refusal description in a refused call's ``structuredContent``."""

GUARDRAIL_META_KEY = "spanguard/guardrail"
"""Result ``_meta`` key of the post-call findings (verification and decisions)."""

DECISIONS_META_KEY = GUARDRAIL_META_KEY
"""0.1 name of :data:`GUARDRAIL_META_KEY`."""


def refusal_payload(violation: GuardrailViolation, tool: str,
                    details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The wire ``CallToolResult`` answering a call a guard refused or held.

    ``details`` adds fields to a refusal's structured description (not to a
    hold payload, which describes the hold record itself).
    """
    if isinstance(violation, HoldError):
        return hold_result_payload(violation)
    reason = str(violation) or violation.error_type
    description: dict[str, Any] = {"tool": tool, "guard": violation.guard,
                                   "error_type": violation.error_type, "reason": reason}
    if details:
        description.update(details)
    text = f"spanguard refused tool {tool!r} ({violation.guard}: {violation.error_type}): {reason}"
    return {"content": [{"type": "text", "text": text}],
            "structuredContent": {REFUSAL_KEY: description}, "isError": True}


def refusal_result(violation: GuardrailViolation, tool: str, *,
                   details: Mapping[str, Any] | None = None) -> CallToolResult:
    """:func:`refusal_payload` as the SDK's ``CallToolResult`` (for SDK-built servers).

    The SDK is imported here, not with the module: the proxy renders wire dicts
    and runs without it.
    """
    from mcp.types import CallToolResult

    return CallToolResult.model_validate(refusal_payload(violation, tool, details))


def outcome_payload(result: Mapping[str, Any],
                    decisions: Sequence[Decision]) -> dict[str, Any] | None:
    """The tool's wire result with the post-call findings, or None if there are none.

    Never modifies ``result``. A verification that is not ``verified`` and a
    decision that is not allowed both make the result an error. A result a guard
    withheld (another tenant's, say) is replaced whole: none of its content,
    structured content or ``_meta`` is passed on.
    """
    withheld = withheld_result(decisions)
    if withheld is not None:
        return _withheld_payload(withheld, decisions)
    verification = verification_of("", decisions)
    others = [d for d in decisions if d.guard != VerifyGuard.name and d.kind != "allow"]
    if verification is None and not others:
        return None
    findings: dict[str, Any] = {}
    if verification is not None:
        findings["verification"] = {"status": verification.status,
                                    "detail": verification.detail}
    if others:
        findings["decisions"] = [{"guard": d.guard, "decision": d.kind, "reason": d.reason}
                                 for d in others]
    out = dict(result)
    out["_meta"] = {**(out.get("_meta") or {}), GUARDRAIL_META_KEY: findings}
    text = _escalation(decisions, verification)
    if text is not None:
        out["content"] = [*(result.get("content") or []), {"type": "text", "text": text}]
        out["isError"] = True
    return out


def _withheld_payload(withheld: GuardrailViolation,
                      decisions: Sequence[Decision]) -> dict[str, Any]:
    findings = {"decisions": [{"guard": d.guard, "decision": d.kind, "reason": d.reason}
                              for d in decisions if d.kind != "allow"]}
    text = f"spanguard withheld this result ({withheld.guard}: {withheld.error_type}): {withheld}"
    return {"content": [{"type": "text", "text": text}], "isError": True,
            "structuredContent": {REFUSAL_KEY: {"guard": withheld.guard,
                                                "error_type": withheld.error_type,
                                                "reason": str(withheld)}},
            "_meta": {GUARDRAIL_META_KEY: findings}}


def apply_decisions(result: Mapping[str, Any], decisions: Sequence[Decision]) -> dict[str, Any]:
    """A copy of the wire result with the post-call decisions applied (0.1 name).

    Same as :func:`outcome_payload`, except that it always returns a copy.
    """
    return outcome_payload(result, decisions) or dict(result)


def _escalation(decisions: Sequence[Decision],
                verification: VerificationResult | None) -> str | None:
    """The text block that says why a result that ran is not a success, if it is not."""
    unconfirmed = verification is not None and not verification.confirmed
    failed = [d for d in decisions if (d.guard == VerifyGuard.name and unconfirmed)
              or (d.guard != VerifyGuard.name and not d.allowed)]
    if not failed:
        return None
    what = "not confirmed" if unconfirmed else "post-call check failed"
    reasons = "; ".join(f"{d.guard}: {d.reason or d.kind}" for d in failed)
    return f"spanguard: {what} ({reasons})"
