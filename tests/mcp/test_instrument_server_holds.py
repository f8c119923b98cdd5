"""Maker-checker holds inside ``instrument_server``: the hold payload, then one execution."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mcp.client._memory import InMemoryTransport  # the SDK's in-memory test transport
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage
from mcp.types import INVALID_PARAMS, JSONRPCError, JSONRPCNotification, JSONRPCRequest

from spanguard.guardrails import HoldRules, Policy, approve, get_hold, list_holds
from spanguard.mcp_bridge import instrument_server
from tests.mcp.mcp_helpers import connect, high_level_server, low_level_server
from tests.mcp.sdk_otel import global_capture


@pytest.mark.parametrize("make_server", [high_level_server, low_level_server],
                         ids=["MCPServer", "lowlevel"])
async def test_a_held_call_runs_once_after_a_second_identity_approves(
        make_server: Callable[..., Server[Any] | MCPServer]) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = make_server(executed)
    policy = Policy(holds=HoldRules(tools=("delete_all",)))
    instrument_server(server, policy, tracer_provider=cap.tracer_provider, identity="alice")
    async with connect(server) as session:
        held = await session.call_tool("delete_all", {"text": "users"})
        assert held.is_error and executed == []
        hold = (held.structured_content or {})["spanguard_hold"]
        assert hold["status"] == "held" and hold["tool"] == "delete_all"
        assert hold["approve_command"] == f"spanguard holds approve {hold['hold_id']} --as NAME"
        approve(hold["hold_id"], "bob")
        ran = await session.call_tool("delete_all", {"text": "users"})  # a new request id
        again = await session.call_tool("delete_all", {"text": "users"})
    assert not ran.is_error and executed == ["delete_all"]
    assert get_hold(hold["hold_id"]).status == "executed"
    assert again.is_error
    assert (again.structured_content or {})["spanguard_hold"]["hold_id"] != hold["hold_id"]
    span = next(node for tree in cap.trees() for node in tree.walk()
                if node.name == "tools/call delete_all")
    assert span.attributes["spanguard.hold.id"] == hold["hold_id"]
    assert hold["server"] == server.name  # holds are bound to the server's own name


@pytest.mark.parametrize("arguments", [["users"], "users", 7])
async def test_non_object_arguments_are_left_to_the_sdk_to_refuse_and_never_held(
        arguments: object) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    instrument_server(server, Policy(holds=HoldRules(tools=("delete_all",))),
                      tracer_provider=cap.tracer_provider, identity="alice")
    async with InMemoryTransport(server) as (read, write):
        await write.send(SessionMessage(JSONRPCRequest(
            jsonrpc="2.0", id=1, method="initialize",
            params={"protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"}})))
        await read.receive()
        await write.send(SessionMessage(JSONRPCNotification(
            jsonrpc="2.0", method="notifications/initialized")))
        await write.send(SessionMessage(JSONRPCRequest(
            jsonrpc="2.0", id=2, method="tools/call",
            params={"name": "delete_all", "arguments": arguments})))
        answer = (await read.receive()).message
    assert isinstance(answer, JSONRPCError) and answer.error.code == INVALID_PARAMS
    assert executed == [] and list_holds() == []  # no approval for a call nobody can make
