"""``ToolGate`` used directly, as an embedding adapter would: faults at its edges.

A read-back that raises, a tool that failed on its own, a gate closed while a
held call waits, and the bounded memory of its sessions. Real guards, the real
hold store, spans in ``spanguard.testing.capture``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from opentelemetry.trace import INVALID_SPAN

from spanguard import semconv as sc
from spanguard.guardrails.holds import HoldPending, HoldRules
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.steps import ToolCall
from spanguard.mcp_bridge import GUARDRAIL_META_KEY, ToolGate
from spanguard.mcp_bridge.correlation import Correlation
from spanguard.testing import SpanCapture

VERIFY_WRITE = Policy.from_mapping({"verify": {"write": {"call": "read"}}})
RESULT: dict[str, Any] = {"content": [{"type": "text", "text": "written"}], "isError": False}


@pytest.mark.parametrize(("error", "error_type"), [
    (MCPError(-32601, "Method not found"), "-32601"),
    (TimeoutError("no answer"), "TimeoutError"),
], ids=["protocol_error", "timeout"])
async def test_a_read_back_that_raises_leaves_the_action_unconfirmed(
        error: Exception, error_type: str, cap: SpanCapture) -> None:
    gate = ToolGate(VERIFY_WRITE, tracer_provider=cap.tracer_provider)
    run = gate.start_run("run", Correlation(), None)
    call = ToolCall("write", {"key": "k"})

    async def read_back(tool: str, arguments: Mapping[str, Any]) -> Any:
        raise error

    tracer = cap.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("tools/call write") as span:
        assert gate.needs_read_back(call, RESULT)
        answer = await gate.settle(run, call, RESULT, span, read_back)

    assert answer is not None and answer["isError"] is True
    assert answer["content"][0] == RESULT["content"][0]
    assert answer["_meta"][GUARDRAIL_META_KEY]["verification"]["status"] == "unknown"
    (tree,) = cap.trees()
    assert tree.name == "tools/call write"
    assert tree.attributes[sc.ERROR_TYPE] == "unverified_action"
    (read,) = [n for n in tree.children if n.name == "tools/call read"]
    assert read.attributes[sc.ERROR_TYPE] == error_type
    assert RESULT["isError"] is False  # the tool's own result is never modified


async def test_a_tool_that_failed_is_not_read_back(cap: SpanCapture) -> None:
    gate = ToolGate(VERIFY_WRITE, tracer_provider=cap.tracer_provider)
    run = gate.start_run("run", Correlation(), None)
    call = ToolCall("write", {"key": "k"})
    failed = {"content": [{"type": "text", "text": "disk full"}], "isError": True}
    calls: list[str] = []

    async def read_back(tool: str, arguments: Mapping[str, Any]) -> Any:
        calls.append(tool)
        return RESULT

    assert not gate.needs_read_back(call, failed)
    assert await gate.settle(run, call, failed, INVALID_SPAN, read_back) is None
    assert calls == []


async def test_closing_the_gate_ends_a_hold_wait_at_once(cap: SpanCapture) -> None:
    gate = ToolGate(Policy(holds=HoldRules(tools=("wipe",))),
                    tracer_provider=cap.tracer_provider, identity="alice", hold_wait=60)
    run = gate.session_run("session", Correlation(), None)
    held = gate.check(run, ToolCall("wipe", {"path": "/"}), INVALID_SPAN)
    assert isinstance(held, HoldPending) and gate.waits_for(held) is held

    waiting = asyncio.create_task(gate.wait(held))
    await asyncio.sleep(0.3)  # the worker thread is polling the hold store now
    gate.close()
    assert await asyncio.wait_for(waiting, 5) is held  # still held: nothing runs


def test_sessions_kept_by_the_gate_are_bounded_and_ended(cap: SpanCapture) -> None:
    gate = ToolGate(Policy.from_mapping({"loop_budget": {"max_tool_calls": 10}}),
                    tracer_provider=cap.tracer_provider)
    first = gate.session_run("conversation-0", Correlation(session="hmac:0000000000000000"),
                             None)
    assert gate.session_run("conversation-0", Correlation(), None) is first
    for n in range(1, 4097):
        gate.session_run(f"conversation-{n}", Correlation(), None)
    # The least recently used session was ended and forgotten: a new run starts.
    again = gate.session_run("conversation-0", Correlation(), None)
    assert again is not first and again.session is None
    assert first.session == "hmac:0000000000000000"
