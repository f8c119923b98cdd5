"""The guardrail hook on ``tools/call``: describe the call, ask the enforcer, carry out.

The enforcer decides; this module only translates. A refusal becomes a tool
result with ``isError`` (the model reads why), never a forwarded call.
Enforcement fails closed: a guard that crashes refuses the call rather than
letting it through unchecked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

from spanguard.guardrails import (
    Decision,
    Enforcer,
    GuardrailViolation,
    RunState,
    ToolCall,
    ToolOutcome,
)
from spanguard.mcp_bridge._proxy_messages import RequestId, tool_error_result
from spanguard.spantree import mark_error

logger = logging.getLogger("spanguard.mcp_bridge.proxy")


class ToolGate:
    """One client session's guardrail state in front of the wrapped server."""

    def __init__(self, enforcer: Enforcer, state: RunState) -> None:
        self.enforcer = enforcer
        self.state = state

    def before(self, request_id: RequestId, call: ToolCall, span: Span) -> bytes | None:
        """None to forward the call, or the refusal frame to answer the client with."""
        try:
            self.enforcer.before_tool_call(self.state, call, span)
        except GuardrailViolation as exc:
            mark_error(span, None, exc.error_type)
            return _refusal(request_id, call, exc.guard, exc.error_type, str(exc))
        except Exception as exc:
            logger.exception("guardrail check failed for tool %s; refusing the call", call.tool)
            mark_error(span, exc, "guardrail_error")
            return _refusal(request_id, call, "guardrail", "guardrail_error",
                            f"the guardrail check failed ({type(exc).__name__}: {exc}); "
                            "the call was not forwarded")
        return None

    def after(self, call: ToolCall, result: Any, is_error: bool, span: Span) -> list[Decision]:
        """Post-call decisions (e.g. verification); the ones that did not allow."""
        try:
            decisions = self.enforcer.after_tool_call(
                self.state, call, ToolOutcome(result, is_error=is_error), span)
        except Exception as exc:
            logger.exception("post-call guardrail failed for tool %s", call.tool)
            mark_error(span, exc, "guardrail_error")
            return [Decision("deny", "guardrail", f"post-call check failed: {exc}", error=exc)]
        failed = [d for d in decisions if not d.allowed]
        for decision in failed:
            mark_error(span, None, getattr(decision.error, "error_type", "guardrail_violation"))
        return failed

    def end(self) -> None:
        try:
            self.enforcer.end_run(self.state)
        except Exception:
            logger.exception("guardrail end_run failed")


def _refusal(request_id: RequestId, call: ToolCall, guard: str, error_type: str,
             reason: str) -> bytes:
    return tool_error_result(
        request_id, f"spanguard refused the call to tool {call.tool!r}: {reason}",
        {"spanguard": {"refused": True, "tool": call.tool, "guard": guard,
                       "error_type": error_type, "reason": reason}})


def flagged_result(result: Mapping[str, Any], failed: list[Decision]) -> dict[str, Any]:
    """The upstream's result, marked as an error because a post-call check failed.

    Content is kept (nothing the server said is lost) and a text block naming the
    failed checks is appended: an unverified action is never reported as success.
    """
    reasons = "; ".join(f"{d.guard}: {d.reason or d.kind}" for d in failed)
    flagged = dict(result)
    content = list(result.get("content") or [])
    content.append({"type": "text", "text": f"spanguard: post-call check failed ({reasons})"})
    flagged["content"] = content
    flagged["isError"] = True
    return flagged
