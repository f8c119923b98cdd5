"""Guardrails inside ``instrument_server``: refuse before the tool runs, escalate after.

Guards are plugged in the way users add their own (``Policy(guards=...)``), so the
path under test is the real one: ``Policy`` -> ``Enforcer`` -> guards, called from
the MCP middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.types import TextContent
from opentelemetry.trace import StatusCode

from spanguard import semconv as sc
from spanguard.guardrails import (
    Decision,
    Guard,
    GuardrailViolation,
    Policy,
    RunState,
    ToolCall,
    ToolOutcome,
)
from spanguard.hashing import KeyedHasher, payload_hash
from spanguard.mcp_bridge import correlation, instrument_server
from spanguard.mcp_bridge.guard import GUARDRAIL_META_KEY, REFUSAL_KEY
from tests.mcp.mcp_helpers import connect, high_level_server, low_level_server
from tests.mcp.sdk_otel import finished, global_capture

ServerFactory = Callable[..., "Server[Any] | MCPServer"]
SERVERS = pytest.mark.parametrize("make_server", [high_level_server, low_level_server],
                                  ids=["MCPServer", "lowlevel"])


class DestructiveRefused(GuardrailViolation):
    guard = "no_destructive"
    error_type = "destructive_refused"


class RecordingGuard(Guard):
    """Refuses destructive tools; optionally crashes or rejects results; remembers calls."""

    name = "no_destructive"

    def __init__(self) -> None:
        self.before: list[tuple[RunState, ToolCall]] = []
        self.crash = False
        self.reject_results = False

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        self.before.append((run, call))
        if self.crash:
            raise RuntimeError("guard bug")
        if call.annotations and call.annotations.get("destructiveHint"):
            reason = "destructive tools need a second person's approval"
            return Decision("deny", self.name, reason, error=DestructiveRefused(reason))
        return None

    def after_tool_call(self, run: RunState, call: ToolCall,
                        outcome: ToolOutcome) -> Decision | None:
        if self.reject_results:
            return Decision("deny", "verify", "the write did not show up on read-back")
        return None


@pytest.fixture
def guard() -> RecordingGuard:
    return RecordingGuard()


@SERVERS
async def test_refused_tool_does_not_run_and_returns_an_error_result(
        make_server: ServerFactory, guard: RecordingGuard) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = make_server(executed)
    instrument_server(server, Policy(guards=(guard,)), tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        refused = await session.call_tool("delete_all", {"text": "users"})
        allowed = await session.call_tool("echo", {"text": "hi"})

    assert executed == ["echo"]
    assert refused.is_error is True and allowed.is_error is False
    assert refused.structured_content is not None
    assert refused.structured_content[REFUSAL_KEY] == {
        "tool": "delete_all", "guard": "no_destructive", "error_type": "destructive_refused",
        "reason": "destructive tools need a second person's approval"}
    block = refused.content[0]
    assert isinstance(block, TextContent) and "approval" in block.text

    # The guard saw the server's annotations, listed before the first call.
    _, call = guard.before[0]
    assert call.annotations == {"destructiveHint": True}
    assert call.arguments_hash == payload_hash({"text": "users"})

    root = next(node for tree in cap.trees() for node in tree.walk()
                if node.name == "tools/call delete_all")
    assert root.attributes[sc.TOOL_RESULT_STATUS] == "refused"
    assert root.attributes[sc.ERROR_TYPE] == "destructive_refused"  # a refusal, not a tool error
    assert root.span.status == "ERROR"
    (decision,) = [n for n in root.children if n.name == "guardrail no_destructive"]
    assert decision.attributes[sc.GUARDRAIL_DECISION] == "deny"
    assert decision.attributes[sc.ERROR_TYPE] == "destructive_refused"
    assert len(finished(cap, "tools/call delete_all")) == 1


async def test_a_crashing_guard_refuses_the_call(guard: RecordingGuard) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    instrument_server(server, Policy(guards=(guard,)), tracer_provider=cap.tracer_provider)
    guard.crash = True

    async with connect(server) as session:
        result = await session.call_tool("echo", {"text": "hi"})

    assert executed == []
    assert result.is_error is True
    assert result.structured_content is not None
    assert result.structured_content[REFUSAL_KEY]["error_type"] == "guardrail_error"


async def test_a_failed_verification_turns_the_result_into_an_error(
        guard: RecordingGuard) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    instrument_server(server, Policy(guards=(guard,)), tracer_provider=cap.tracer_provider)
    guard.reject_results = True

    async with connect(server) as session:
        result = await session.call_tool("echo", {"text": "hi"})

    assert executed == ["echo"]  # it ran; the escalation comes after
    assert result.is_error is True
    texts = [b.text for b in result.content if isinstance(b, TextContent)]
    assert texts[0] == "hi" and "read-back" in texts[-1]
    assert result.meta is not None
    assert result.meta[GUARDRAIL_META_KEY] == {"verification": {
        "status": "unknown", "detail": "the write did not show up on read-back"}}
    (span,) = finished(cap, "tools/call echo")
    assert (span.attributes or {})[sc.ERROR_TYPE] == "unverified_action"
    assert span.status.status_code is StatusCode.ERROR


async def test_guard_state_is_kept_per_session(guard: RecordingGuard) -> None:
    cap = global_capture()
    hasher = KeyedHasher(b"session-state-test-key")
    server = high_level_server()
    instrument_server(server, Policy(guards=(guard,)), tracer_provider=cap.tracer_provider,
                      identity="billing-bot")

    async with connect(server) as session:
        with correlation(session_id="conv-a", tenant_id="acme", hasher=hasher):
            await session.call_tool("echo", {"text": "1"})
            await session.call_tool("echo", {"text": "2"})
        with correlation(session_id="conv-b", hasher=hasher):
            await session.call_tool("echo", {"text": "3"})
        await session.call_tool("echo", {"text": "4"})
        await session.call_tool("echo", {"text": "5"})

    runs = [run for run, _ in guard.before]
    assert runs[0] is runs[1] and runs[0].tool_calls == 2
    assert runs[0].session == hasher("conv-a") and runs[0].tenant == hasher("acme")
    assert runs[0].identity == "billing-bot"
    assert runs[2] is not runs[0] and runs[2].session == hasher("conv-b")
    assert runs[3] is runs[4] and runs[3] not in (runs[0], runs[2])
    assert runs[3].session is None
