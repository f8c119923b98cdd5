"""Guardrail decisions in MCP's own idiom: tool results, never protocol errors.

A refused or held tool call is answered with a ``CallToolResult`` whose
``isError`` is true, as the MCP spec asks for tool-level failures: the model
sees the reason and can adapt, and the client session stays healthy. Both the
in-process middleware and the stdio proxy build their answers here, so a
refusal reads the same whichever path produced it.

The machine-readable part sits in ``structuredContent["spanguard"]`` (clients do
not validate ``structuredContent`` of error results against the tool's output
schema) and, after a call, in the result's ``_meta["spanguard/guardrail"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mcp.types import CallToolResult, TextContent

from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.steps import Decision

__all__ = ["DECISIONS_META_KEY", "REFUSAL_KEY", "apply_decisions", "refusal_result"]

REFUSAL_KEY = "spanguard"
"""Key of the refusal description in a refused call's ``structuredContent``."""

DECISIONS_META_KEY = "spanguard/guardrail"
"""Key of the post-call decisions in a result's ``_meta``."""

# After the tool ran, these decisions mean the result must not pass as a success
# (e.g. a verifier found the action did not happen): the result turns into an error.
_ESCALATING = frozenset({"deny", "hold"})


def refusal_result(
    violation: GuardrailViolation,
    tool: str,
    *,
    details: Mapping[str, Any] | None = None,
) -> CallToolResult:
    """The ``isError`` result that replaces a tool call a guard refused or held.

    ``details`` adds fields to the structured description (a hold id, its expiry).
    The proxy, which speaks raw JSON, sends
    ``refusal_result(...).model_dump(by_alias=True, mode="json", exclude_none=True)``.
    """
    reason = str(violation) or violation.error_type
    description: dict[str, Any] = {
        "tool": tool,
        "guard": violation.guard,
        "error_type": violation.error_type,
        "reason": reason,
    }
    if details:
        description.update(details)
    text = f"spanguard refused tool {tool!r} ({violation.guard}: {violation.error_type}): {reason}"
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content={REFUSAL_KEY: description},
        is_error=True,
    )


def apply_decisions(result: Mapping[str, Any], decisions: Sequence[Decision]) -> dict[str, Any]:
    """Return a copy of a wire ``CallToolResult`` carrying the post-call decisions.

    Decisions other than ``allow`` are listed under ``_meta["spanguard/guardrail"]``;
    a ``deny`` or ``hold`` (e.g. verification failed) also turns the result into an
    error with a text block saying why, so it is never reported as a success.
    """
    notable = [d for d in decisions if d.kind != "allow"]
    out = dict(result)
    if not notable:
        return out
    meta = dict(out.get("_meta") or {})
    meta[DECISIONS_META_KEY] = [
        {"guard": d.guard, "decision": d.kind, "reason": d.reason} for d in notable
    ]
    out["_meta"] = meta
    escalated = [d for d in notable if d.kind in _ESCALATING]
    if escalated:
        content = list(out.get("content") or [])
        content.extend(
            {"type": "text", "text": f"spanguard {d.guard}: {d.kind}: {d.reason}"}
            for d in escalated
        )
        out["content"] = content
        out["isError"] = True
    return out
