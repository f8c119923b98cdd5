"""mcp 1.x: langchain-mcp-adapters, ``spanguard mcp wrap``, client propagation and
``instrument_server``, with the SDK major that most servers on PyPI still pin."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import mcp.types as types
from langchain_mcp_adapters.client import MultiServerMCPClient
from mcp import ClientSession
from mcp.server.fastmcp import FastMCP
from mcp.shared.memory import create_connected_server_and_client_session
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from spanguard import semconv as sc
from spanguard.guardrails import Policy, ReadBackCheck, ToolLoop, Verification
from spanguard.hashing import KeyedHasher
from spanguard.mcp_bridge import (
    GUARDRAIL_META_KEY,
    correlation,
    correlation_from_meta,
    instrument_server,
    outgoing_meta,
    propagate_context,
)
from spanguard.mcp_bridge import _protocol as protocol
from spanguard.plugins.mcp_adapters import TraceContextInterceptor
from spanguard.testing import SpanCapture
from tests.compat.inside.agent import (
    TOOL,
    assert_one_trace,
    configure,
    run_agent,
    server_env,
    wrap_command,
)


def test_the_installed_sdk_is_1x() -> None:
    assert metadata.version("mcp").startswith("1."), metadata.version("mcp")


async def test_langgraph_agent_through_adapters_and_wrap_is_one_trace(tmp_path: Path) -> None:
    home = tmp_path / "home"
    handle = configure(home)
    command = wrap_command()
    client = MultiServerMCPClient(
        {"time": {"transport": "stdio", "command": command[0], "args": command[1:],
                  "env": server_env(home)}},
        tool_interceptors=[TraceContextInterceptor()])
    tools = await client.get_tools()
    assert [t.name for t in tools] == [TOOL, "convert_time"]
    answer = await run_agent(handle, tools)
    handle.shutdown()
    assert "Europe/Paris" in answer, answer
    spans = assert_one_trace(home)
    # The session the adapters opened for the call joined the trace too.
    assert spans["initialize"].trace_id == spans[f"tools/call {TOOL}"].trace_id


async def test_without_the_interceptor_the_adapters_start_a_new_trace(tmp_path: Path) -> None:
    """What the interceptor fixes: mcp 1.x clients send no traceparent."""
    home = tmp_path / "home"
    handle = configure(home)
    command = wrap_command()
    client = MultiServerMCPClient({"time": {"transport": "stdio", "command": command[0],
                                            "args": command[1:], "env": server_env(home)}})
    await run_agent(handle, await client.get_tools())
    handle.shutdown()
    from spanguard.store import TraceStore

    spans = TraceStore.in_home(home).spans()
    call = next(s for s in spans if s.name == f"tools/call {TOOL}")
    agent = next(s for s in spans if s.name == "invoke_agent time_agent")
    assert call.trace_id != agent.trace_id and call.parent_span_id is None


def _server() -> FastMCP:
    server = FastMCP("compat")
    notes: list[str] = []

    @server.tool(annotations=types.ToolAnnotations(readOnlyHint=True))
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    @server.tool()
    def write_note(text: str, really: bool = True) -> str:
        """Store a note (or pretend to)."""
        if really:
            notes.append(text)
        return "stored"

    @server.tool(annotations=types.ToolAnnotations(readOnlyHint=True))
    def read_notes() -> str:
        """All notes."""
        return "\n".join(notes)

    return server


async def test_propagate_context_sends_traceparent_and_correlation_baggage(
        cap: SpanCapture) -> None:
    server = _server()
    metas: list[dict[str, Any]] = []
    inner = server._mcp_server.request_handlers[types.CallToolRequest]

    async def recording(request: types.CallToolRequest) -> Any:
        meta = request.params.meta
        metas.append(meta.model_dump(by_alias=True, exclude_none=True) if meta else {})
        return await inner(request)

    server._mcp_server.request_handlers[types.CallToolRequest] = recording
    hasher = KeyedHasher(b"correlation-test-key")
    tracer = cap.tracer_provider.get_tracer("caller")
    async with create_connected_server_and_client_session(server._mcp_server) as session:
        await session.call_tool("echo", {"text": "plain"})
        propagate_context(session)
        with tracer.start_as_current_span("caller") as caller, \
                correlation(tenant_id="acme", hasher=hasher):
            await session.call_tool("echo", {"text": "traced"})
            await session.call_tool("echo", {"text": "meta"}, meta=outgoing_meta({"k": 1}))
    assert "traceparent" not in metas[0]  # what mcp 1.x sends on its own
    trace_id = format_trace_id(caller.get_span_context().trace_id)
    span_id = format_span_id(caller.get_span_context().span_id)
    for meta in metas[1:]:
        assert meta["traceparent"].split("-")[1:3] == [trace_id, span_id], meta
        assert correlation_from_meta(meta).tenant == hasher("acme"), meta
    assert metas[2]["k"] == 1


async def test_propagate_requests_is_inert_for_concurrent_calls_outside_the_block(
        cap: SpanCapture) -> None:
    """The 1.x hook is installed on the ClientSession class; only requests sent
    inside a block (this task's context) carry the context, even on one session."""
    import asyncio

    from spanguard.mcp_bridge.client import propagate_requests

    server = _server()
    seen: dict[str, dict[str, Any]] = {}
    inner = server._mcp_server.request_handlers[types.CallToolRequest]

    async def recording(request: types.CallToolRequest) -> Any:
        meta = request.params.meta
        text = (request.params.arguments or {})["text"]
        seen[text] = meta.model_dump(by_alias=True, exclude_none=True) if meta else {}
        return await inner(request)

    server._mcp_server.request_handlers[types.CallToolRequest] = recording
    tracer = cap.tracer_provider.get_tracer("caller")
    async with create_connected_server_and_client_session(server._mcp_server) as session:

        async def call(text: str, inside: bool) -> str:
            with tracer.start_as_current_span(text) as span:
                await asyncio.sleep(0)
                if inside:
                    with propagate_requests():
                        await session.call_tool("echo", {"text": text})
                else:
                    await session.call_tool("echo", {"text": text})
                return format_span_id(span.get_span_context().span_id)

        ids = await asyncio.gather(*(call(f"call-{i}", i % 2 == 0) for i in range(20)))
    for i, span_id in enumerate(ids):
        meta = seen[f"call-{i}"]
        if i % 2 == 0:
            assert meta["traceparent"].split("-")[2] == span_id, (i, meta)
        else:
            assert "traceparent" not in meta, (i, meta)


async def test_instrument_server_on_1x_opens_the_server_span_and_guards(
        cap: SpanCapture) -> None:
    server = _server()
    policy = Policy(tool_loop=ToolLoop(identical_calls=3))
    installed = instrument_server(server, policy, tracer_provider=cap.tracer_provider)
    assert instrument_server(server, policy, tracer_provider=cap.tracer_provider) is installed
    tracer = cap.tracer_provider.get_tracer("caller")
    results = []
    async with create_connected_server_and_client_session(server._mcp_server) as session:
        propagate_context(session)
        with tracer.start_as_current_span("caller"):
            for _ in range(3):
                results.append(await session.call_tool("echo", {"text": "again"}))
    assert [r.isError for r in results] == [False, False, True]
    refusal = (results[2].structuredContent or {})["spanguard"]
    assert refusal["error_type"] == "tool_loop_detected"
    assert installed.tools.get("echo") == {"readOnlyHint": True}
    root = cap.tree()
    assert root.name == "caller"
    calls = root.find_all("tools/call echo")
    assert len(calls) == 3
    assert all(c.kind == "TOOL" for c in calls)
    raw = [s for s in cap.exporter.get_finished_spans() if s.name == "tools/call echo"]
    assert {s.kind for s in raw} == {SpanKind.SERVER}
    assert [s.attributes.get(sc.ERROR_TYPE) for s in raw] == [None, None, "tool_loop_detected"]
    assert raw[0].attributes[sc.MCP_METHOD_NAME] == "tools/call"
    assert raw[0].attributes[sc.MCP_PROTOCOL_VERSION] == types.LATEST_PROTOCOL_VERSION


async def test_instrument_server_on_1x_verifies_through_the_servers_own_handler(
        cap: SpanCapture) -> None:
    server = _server()
    check = ReadBackCheck("read_notes", expect_contains="{text}")
    instrument_server(server, Policy(verify=Verification({"write_note": check})),
                      tracer_provider=cap.tracer_provider)
    async with create_connected_server_and_client_session(server._mcp_server) as session:
        stored = await session.call_tool("write_note", {"text": "hello"})
        faked = await session.call_tool("write_note", {"text": "ghost", "really": False})
    assert not stored.isError
    assert (stored.meta or {})[GUARDRAIL_META_KEY]["verification"]["status"] == "verified"
    assert faked.isError  # the tool said "stored"; the read-back says otherwise
    assert (faked.meta or {})[GUARDRAIL_META_KEY]["verification"]["status"] == "failed"
    spans = [s for s in cap.exporter.get_finished_spans() if s.name == "tools/call write_note"]
    assert [s.attributes.get("spanguard.verification.status")
            for s in spans] == ["verified", "failed"]
    assert spans[1].attributes[sc.ERROR_TYPE] == "unverified_action"
    read_backs = [s for s in cap.exporter.get_finished_spans()
                  if s.name == "tools/call read_notes"]
    assert [s.kind for s in read_backs] == [SpanKind.CLIENT, SpanKind.CLIENT]


def test_protocol_constants_match_the_1x_sdk() -> None:
    assert (protocol.PARSE_ERROR, protocol.INVALID_REQUEST, protocol.INTERNAL_ERROR,
            protocol.CONNECTION_CLOSED) == (types.PARSE_ERROR, types.INVALID_REQUEST,
                                           types.INTERNAL_ERROR, types.CONNECTION_CLOSED)
    assert (protocol.METHOD_NOT_FOUND, protocol.INVALID_PARAMS) == (
        types.METHOD_NOT_FOUND, types.INVALID_PARAMS)


def test_client_session_is_the_one_the_adapters_use() -> None:
    from langchain_mcp_adapters import sessions

    assert sessions.ClientSession is ClientSession
    assert "mcp" in sys.modules
