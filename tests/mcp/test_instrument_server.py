"""``instrument_server``: exactly one server span per ``tools/call``, both vocabularies.

Real SDK servers (``MCPServer`` and the low-level ``Server``) and a real
``ClientSession`` over the SDK's in-memory JSON-RPC transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from opentelemetry.trace import SpanKind, StatusCode

from spanguard import semconv as sc
from spanguard.hashing import payload_hash
from spanguard.mcp_bridge import SpanguardServerMiddleware, instrument_server
from spanguard.testing import SpanCapture
from tests.mcp.mcp_helpers import connect, high_level_server, low_level_server
from tests.mcp.sdk_otel import finished, global_capture

ServerFactory = Callable[..., "Server[Any] | MCPServer"]
SERVERS = pytest.mark.parametrize("make_server", [high_level_server, low_level_server],
                                  ids=["MCPServer", "lowlevel"])


@SERVERS
async def test_one_enriched_sdk_span_per_call(make_server: ServerFactory) -> None:
    cap = global_capture()
    server = make_server()
    instrument_server(server, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        for text in ("a", "b", "c"):
            await session.call_tool("echo", {"text": text})

    spans = finished(cap, "tools/call echo")
    assert len(spans) == 3  # no second span per call: the SDK's own one is enriched
    for span, text in zip(spans, ("a", "b", "c"), strict=True):
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "mcp-python-sdk"
        assert span.kind is SpanKind.SERVER
        attrs = span.attributes or {}
        assert attrs[sc.OPENINFERENCE_SPAN_KIND] == "TOOL"
        assert attrs[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
        assert attrs[sc.GEN_AI_TOOL_NAME] == "echo"
        assert attrs[sc.OI_TOOL_NAME] == "echo"
        assert attrs[sc.TOOL_ARGS_HASH] == payload_hash({"text": text})
        assert attrs[sc.TOOL_RESULT_STATUS] == "ok"
        assert attrs[sc.MCP_METHOD_NAME] == "tools/call"
        assert attrs[sc.MCP_PROTOCOL_VERSION]
        assert attrs[sc.JSONRPC_REQUEST_ID]
        assert span.status.status_code is StatusCode.UNSET
    scopes = {s.instrumentation_scope.name for s in cap.exporter.get_finished_spans()
              if s.instrumentation_scope is not None}
    assert "spanguard.mcp_bridge" not in scopes


@SERVERS
async def test_is_error_result_is_a_tool_error(make_server: ServerFactory) -> None:
    cap = global_capture()
    server = make_server()
    instrument_server(server, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        result = await session.call_tool("fail", {"text": "disk full"})

    assert result.is_error is True
    (span,) = finished(cap, "tools/call fail")
    assert (span.attributes or {})[sc.ERROR_TYPE] == "tool_error"
    assert (span.attributes or {})[sc.TOOL_RESULT_STATUS] == "error"
    assert span.status.status_code is StatusCode.ERROR


async def test_own_provider_gets_exactly_one_span_continuing_the_trace(
        cap: SpanCapture) -> None:
    """spanguard's provider is not the global one the SDK writes to: one span of ours."""
    sdk = global_capture()
    server = high_level_server()
    instrument_server(server, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        await session.call_tool("echo", {"text": "x"})
        await session.call_tool("fail", {"text": "y"})

    (ours,) = [s for s in cap.exporter.get_finished_spans() if s.name == "tools/call echo"]
    (client,) = finished(sdk, "MCP send tools/call echo")
    assert ours.kind is SpanKind.SERVER
    assert ours.context.trace_id == client.context.trace_id
    assert ours.parent is not None and ours.parent.span_id == client.context.span_id
    attrs = ours.attributes or {}
    assert attrs[sc.OPENINFERENCE_SPAN_KIND] == "TOOL"
    assert attrs[sc.MCP_METHOD_NAME] == "tools/call"
    assert attrs[sc.JSONRPC_REQUEST_ID]
    assert cap.names().count("tools/call echo") == 1
    assert len(finished(sdk, "tools/call echo")) == 1  # the SDK's, in its own provider
    (failed,) = [s for s in cap.exporter.get_finished_spans() if s.name == "tools/call fail"]
    assert (failed.attributes or {})[sc.ERROR_TYPE] == "tool_error"
    assert failed.status.status_code is StatusCode.ERROR


async def test_instrumenting_twice_installs_one_middleware() -> None:
    cap = global_capture()
    server = high_level_server()
    first = instrument_server(server, tracer_provider=cap.tracer_provider)
    assert instrument_server(server, tracer_provider=cap.tracer_provider) is first
    ours = [m for m in server.middleware if isinstance(m, SpanguardServerMiddleware)]
    assert ours == [first]
    assert type(server.middleware[0]).__name__ == "OpenTelemetryMiddleware"
    assert server.middleware[1] is first

    async with connect(server) as session:
        await session.call_tool("echo", {"text": "x"})
    assert len(finished(cap, "tools/call echo")) == 1


async def test_other_methods_pass_through_untouched() -> None:
    cap = global_capture()
    server = high_level_server()
    instrument_server(server, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        listed = await session.list_tools()

    assert {t.name for t in listed.tools} == {"echo", "fail", "delete_all"}
    (span,) = finished(cap, "tools/list")
    assert sc.OPENINFERENCE_SPAN_KIND not in (span.attributes or {})
