"""Client side: a tool's MCP call sits under its ``execute_tool`` span, in one trace.

Real SDK client (``ClientSession``) and server (``MCPServer``), in memory over
JSON-RPC and across a process boundary over stdio. The LangGraph plugin makes
``execute_tool {tool}`` the current span while a tool body runs; here a real
LangChain tool runs inside such a span opened directly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client._memory import InMemoryTransport
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage
from mcp.types import (
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    TextContent,
)
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from spanguard import semconv as sc
from spanguard.hashing import KeyedHasher
from spanguard.mcp_bridge import correlation, correlation_from_meta, instrument_server
from spanguard.store import TraceStore
from tests.mcp.mcp_helpers import connect, high_level_server
from tests.mcp.sdk_otel import finished, global_capture

SERVER_SCRIPT = Path(__file__).parent / "servers" / "traced_server.py"
HASHER = KeyedHasher(b"correlation-test-key")


class MetaRecorder:
    """A server middleware that keeps every ``tools/call`` ``_meta`` as received."""

    def __init__(self) -> None:
        self.metas: list[dict[str, Any]] = []

    async def __call__(self, ctx: ServerRequestContext[Any, Any],
                       call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call":
            self.metas.append(dict(ctx.meta or {}))
        return await call_next(ctx)


async def test_langchain_tool_mcp_call_nests_under_execute_tool() -> None:
    cap = global_capture()
    server = high_level_server()
    instrument_server(server)
    tracer = cap.tracer_provider.get_tracer("stand-in-for-langgraph-plugin")

    async with connect(server) as session:
        await session.list_tools()  # else the client lists them inside the span, to validate

        @tool
        async def echo(text: str) -> str:
            """Echo through the MCP server."""
            result = await session.call_tool("echo", {"text": text})
            block = result.content[0]
            assert isinstance(block, TextContent)
            return block.text

        with tracer.start_as_current_span("execute_tool echo"):
            assert await echo.ainvoke({"text": "hello"}) == "hello"

    root = next(t for t in cap.trees() if t.name == "execute_tool echo")
    assert root.shape() == ("execute_tool echo", [
        ("MCP send tools/call echo", [("tools/call echo", [])]),
    ])
    server_span = root.find("tools/call echo")
    assert server_span.kind == "TOOL"
    assert server_span.span.kind == "SERVER"
    assert {n.span.trace_id for n in root.walk()} == {root.span.trace_id}


async def test_correlation_sends_only_hashed_ids_as_baggage() -> None:
    cap = global_capture()
    server = high_level_server()
    instrument_server(server)
    recorder = MetaRecorder()
    server.middleware.append(recorder)

    async with connect(server) as session:
        with correlation(session_id="conv-7", user_id="alice@example.com",
                         tenant_id="acme-corp", hasher=HASHER) as ids:
            await session.call_tool("echo", {"text": "x"})
        await session.call_tool("echo", {"text": "y"})

    assert ids.session == HASHER("conv-7") and ids.tenant == HASHER("acme-corp")
    inside, outside = recorder.metas
    assert "traceparent" in inside
    wire = json.dumps(inside)
    for raw in ("conv-7", "alice@example.com", "acme-corp"):
        assert raw not in wire
    assert correlation_from_meta(inside) == ids
    assert "baggage" not in outside  # the block ended, so did the baggage

    first, second = finished(cap, "tools/call echo")
    assert first.attributes[sc.SESSION_HASH] == HASHER("conv-7")
    assert first.attributes[sc.USER_HASH] == HASHER("alice@example.com")
    assert first.attributes[sc.TENANT_HASH] == HASHER("acme-corp")
    assert sc.SESSION_HASH not in second.attributes
    every_value = json.dumps([dict(s.attributes) for s in cap.exporter.get_finished_spans()])
    assert "alice@example.com" not in every_value and "acme-corp" not in every_value


def test_correlation_from_meta_drops_raw_and_malformed_values() -> None:
    good = HASHER("tenant")
    meta = {"baggage": f"spanguard.session.hash=alice%40example.com,"
                       f"spanguard.tenant.hash={good},user.hash=hmac:xyz"}
    ids = correlation_from_meta(meta)
    assert (ids.session, ids.user, ids.tenant) == (None, None, good)
    assert correlation_from_meta({"baggage": 42}).attributes() == {}
    assert correlation_from_meta(None).attributes() == {}


async def test_stdio_server_process_continues_the_callers_trace(tmp_path: Path) -> None:
    cap = global_capture()
    home = tmp_path / "server-home"
    params = StdioServerParameters(command=sys.executable,
                                   args=[str(SERVER_SCRIPT), str(home)])
    tracer = cap.tracer_provider.get_tracer("stand-in-for-langgraph-plugin")

    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        with correlation(session_id="conv-9", hasher=HASHER), \
                tracer.start_as_current_span("execute_tool echo") as tool_span:
            result = await session.call_tool("echo", {"text": "across"})
        failed = await session.call_tool("fail", {"text": "no disk"})
    assert result.is_error is False and failed.is_error is True

    (client_span,) = finished(cap, "MCP send tools/call echo")
    assert client_span.kind is SpanKind.CLIENT
    assert client_span.parent is not None
    assert client_span.parent.span_id == tool_span.get_span_context().span_id

    store = TraceStore.in_home(home)
    try:
        spans = store.spans()
    finally:
        store.close()
    (served,) = [s for s in spans if s.name == "tools/call echo"]
    assert served.trace_id == format_trace_id(client_span.context.trace_id)
    assert served.parent_span_id == format_span_id(client_span.context.span_id)
    assert served.kind == "SERVER"
    assert served.attributes[sc.OPENINFERENCE_SPAN_KIND] == "TOOL"
    assert served.attributes[sc.SESSION_HASH] == HASHER("conv-9")
    assert served.service_name == "traced-server"
    (tool_error,) = [s for s in spans if s.name == "tools/call fail"]
    assert tool_error.attributes[sc.ERROR_TYPE] == "tool_error"
    assert tool_error.status == "ERROR"


async def raw_tool_call(server: MCPServer, meta: dict[str, Any]) -> dict[str, Any]:
    """Speak JSON-RPC to ``server`` by hand, so ``_meta`` reaches it exactly as written.

    (``ClientSession`` would overwrite a bad ``traceparent`` with its own span's.)
    """
    async with InMemoryTransport(server) as (read, write):
        async def request(request_id: int, method: str, params: dict[str, Any]) -> Any:
            await write.send(SessionMessage(JSONRPCRequest(
                jsonrpc="2.0", id=request_id, method=method, params=params)))
            while True:
                message = await read.receive()
                assert isinstance(message, SessionMessage)
                if isinstance(message.message, JSONRPCResponse | JSONRPCError):
                    return message.message

        init = await request(1, "initialize", {
            "protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}})
        assert isinstance(init, JSONRPCResponse)
        await write.send(SessionMessage(JSONRPCNotification(
            jsonrpc="2.0", method="notifications/initialized")))
        reply = await request(2, "tools/call", {
            "name": "echo", "arguments": {"text": "ok"}, "_meta": meta})
        assert isinstance(reply, JSONRPCResponse), reply
        return dict(reply.result)


@pytest.mark.parametrize("traceparent", [
    "00-not-a-trace",
    "00-00000000000000000000000000000000-0000000000000000-01",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01x",
])
async def test_bad_traceparent_gives_a_fresh_trace(traceparent: str) -> None:
    """A peer's garbage ``traceparent`` must neither crash the server nor adopt a trace."""
    cap = global_capture()
    server = high_level_server()
    instrument_server(server)

    result = await raw_tool_call(server, {"traceparent": traceparent,
                                          "baggage": "spanguard.session.hash=raw-id"})

    assert result["isError"] is False
    (served,) = finished(cap, "tools/call echo")
    assert served.parent is None  # a root: a fresh trace, not the peer's
    assert format_trace_id(served.context.trace_id) not in traceparent.lower()
    assert served.attributes[sc.OPENINFERENCE_SPAN_KIND] == "TOOL"
    assert sc.SESSION_HASH not in served.attributes
