"""A session's setup traffic is one trace; the agent's calls stay in the agent's trace.

Raw JSON-RPC to the real proxy in front of the real mcp-server-time (the SDK client
would add trace context of its own when a global tracer provider is installed): an
``initialize`` and a ``tools/list`` without ``_meta`` trace context are folded under one
``mcp session setup`` span instead of each being a trace; a ``tools/call`` carrying the
caller's ``traceparent`` continues the caller's trace, and ends the setup span.
"""

from __future__ import annotations

from pathlib import Path

from opentelemetry.propagate import inject

from spanguard import semconv as sc
from spanguard.testing import SpanCapture
from tests.mcp.proxyproc import RawProxy, stored_spans
from tests.mcp.test_proxy_integration import TIME_SERVER


async def test_setup_requests_share_one_trace_and_calls_keep_the_callers(
        cap: SpanCapture, spanguard_home: Path) -> None:
    proxy = await RawProxy.start(TIME_SERVER)
    await proxy.initialize()
    assert "result" in await proxy.request(1, "tools/list", {})
    with cap.tracer_provider.get_tracer("caller").start_as_current_span("agent") as caller:
        meta: dict[str, str] = {}
        inject(meta)
    called = await proxy.request(2, "tools/call", {
        "name": "get_current_time", "arguments": {"timezone": "UTC"}, "_meta": meta})
    assert called["result"]["isError"] is False
    assert "result" in await proxy.request(3, "tools/list", {})  # later setup, no context
    assert await proxy.close() == 0
    spans = stored_spans(spanguard_home)
    (setup,) = [s for s in spans if s.name == "mcp session setup"]
    assert setup.parent_span_id is None and setup.attributes[sc.MCP_SESSION_SETUP] is True
    folded = [s for s in spans if s.trace_id == setup.trace_id and s is not setup]
    assert sorted(s.name for s in folded) == ["initialize", "tools/list", "tools/list"]
    assert all(s.parent_span_id == setup.span_id and s.kind == "SERVER" for s in folded)
    assert all(s.attributes[sc.NETWORK_TRANSPORT] == "pipe" for s in folded)
    assert not [s for s in folded if sc.GEN_AI_OPERATION_NAME in s.attributes]
    # No setup request is a trace of its own any more.
    assert [s.name for s in spans if s.parent_span_id is None] == ["mcp session setup"]
    (call,) = [s for s in spans if s.name == "tools/call get_current_time"]
    assert call.trace_id == format(caller.get_span_context().trace_id, "032x")
    assert call.parent_span_id == format(caller.get_span_context().span_id, "016x")
    assert call.kind == "SERVER" and call.attributes[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
    # The setup span ended when the first traced call arrived, before the call ended.
    assert setup.start_time <= folded[0].start_time and setup.end_time is not None
    assert setup.end_time <= call.end_time
