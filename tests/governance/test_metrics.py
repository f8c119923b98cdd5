"""Metrics derived from spans: values after a known workload, read with InMemoryMetricReader."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import spanguard
from spanguard import semconv as sc
from spanguard.attributes import (
    agent_attributes,
    agent_span_name,
    chat_span_name,
    cost_attributes,
    model_attributes,
    run_identity_attributes,
    tool_attributes,
    tool_span_name,
    usage_attributes,
)
from spanguard.guardrails import Decision, Guard, GuardrailViolation, ModelCall, RunState
from spanguard.guardrails.enforcer import Enforcer
from spanguard.metrics import MetricsSpanProcessor, register_pending_holds
from spanguard.spantree import SpanTree
from tests.otlp_receiver import otlp_receiver


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    if data is None:
        return out
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def point(found: dict[str, list[Any]], name: str, **attributes: Any) -> Any:
    matches = [p for p in found.get(name, []) if dict(p.attributes) == attributes]
    assert len(matches) == 1, (name, attributes, [dict(p.attributes) for p in found.get(name, [])])
    return matches[0]


@pytest.fixture
def metered() -> Iterator[tuple[TracerProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(MetricsSpanProcessor(MeterProvider(metric_readers=[reader])))
    yield provider, reader
    provider.shutdown()


def _workload(provider: TracerProvider) -> None:
    """One agent run: two model calls, three tool calls (one failing)."""
    tree = SpanTree(provider.get_tracer("test"))
    root = tree.start("run", None, agent_span_name("planner"), agent_attributes("planner"),
                      run_attributes=run_identity_attributes(tenant_hash="hmac:tenant1"))
    for key, (tokens_in, tokens_out, cost) in {"m1": (100, 20, 0.01),
                                               "m2": (200, 30, 0.02)}.items():
        entry = tree.start(key, "run", chat_span_name("gpt-4o-mini"),
                           model_attributes("gpt-4o-mini", "openai"))
        tree.add_usage(entry, tokens_in, tokens_out, cost)
        tree.end(key, attributes={**usage_attributes(tokens_in, tokens_out),
                                  **cost_attributes(cost)})
    for key, tool, failed in (("t1", "search", False), ("t2", "search", True),
                              ("t3", "fetch", False)):
        tree.start(key, "run", tool_span_name(tool), tool_attributes(tool))
        tree.end(key, error_type="TimeoutError" if failed else None)
    assert root.is_root
    tree.end("run")


def test_metric_values_after_a_known_workload(
        metered: tuple[TracerProvider, InMemoryMetricReader]) -> None:
    provider, reader = metered
    _workload(provider)
    provider.force_flush()  # the processor records on its worker thread
    found = points(reader)
    model = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_PROVIDER_NAME: "openai",
             sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini"}
    tokens_in = point(found, sc.METRIC_GEN_AI_TOKEN_USAGE, **model,
                      **{sc.GEN_AI_TOKEN_TYPE: "input"})
    tokens_out = point(found, sc.METRIC_GEN_AI_TOKEN_USAGE, **model,
                       **{sc.GEN_AI_TOKEN_TYPE: "output"})
    assert (tokens_in.count, tokens_in.sum) == (2, 300)
    assert (tokens_out.count, tokens_out.sum) == (2, 50)
    assert tokens_in.explicit_bounds[:3] == (1, 4, 16)  # the conventions' buckets

    assert point(found, sc.METRIC_GEN_AI_OPERATION_DURATION, **model).count == 2
    assert point(found, sc.METRIC_GEN_AI_OPERATION_DURATION,
                 **{sc.GEN_AI_OPERATION_NAME: "execute_tool"}).count == 2
    failed = point(found, sc.METRIC_GEN_AI_OPERATION_DURATION,
                   **{sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.ERROR_TYPE: "TimeoutError"})
    assert failed.count == 1
    run = point(found, sc.METRIC_GEN_AI_OPERATION_DURATION,
                **{sc.GEN_AI_OPERATION_NAME: "invoke_agent"})
    assert run.count == 1 and run.sum >= 0

    def tools(tool: str, status: str) -> int:
        return int(point(found, sc.METRIC_TOOL_CALL_COUNT, **{
            sc.GEN_AI_TOOL_NAME: tool, sc.TOOL_CALL_STATUS: status}).value)

    assert (tools("search", "ok"), tools("search", "error"), tools("fetch", "ok")) == (1, 1, 1)
    cost = point(found, sc.METRIC_COST_USD, **{sc.GEN_AI_AGENT_NAME: "planner",
                                               sc.TENANT_HASH: "hmac:tenant1"})
    assert cost.value == pytest.approx(0.03)


def test_pending_holds_gauge_reads_registered_callbacks(
        metered: tuple[TracerProvider, InMemoryMetricReader]) -> None:
    _, reader = metered
    pending = [3]
    unregister = register_pending_holds(lambda: pending[0], {"store": "sqlite"})
    assert point(points(reader), sc.METRIC_HOLDS_PENDING, store="sqlite").value == 3
    pending[0] = 1
    assert point(points(reader), sc.METRIC_HOLDS_PENDING, store="sqlite").value == 1
    unregister()
    assert not [p for p in points(reader).get(sc.METRIC_HOLDS_PENDING, [])
                if dict(p.attributes) == {"store": "sqlite"}]


def test_a_broken_holds_callback_does_not_break_collection(
        metered: tuple[TracerProvider, InMemoryMetricReader]) -> None:
    _, reader = metered

    def broken() -> int:
        raise RuntimeError("store down")

    unregister = register_pending_holds(broken)
    try:
        assert sc.METRIC_HOLDS_PENDING not in points(reader)
    finally:
        unregister()


class DenyAll(Guard):
    name = "loop_budget"

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        return Decision("deny", self.name, "over budget")


def test_enforcer_decisions_reach_the_configured_meter_provider() -> None:
    reader = InMemoryMetricReader()
    handle = spanguard.configure(local_store=False,
                                 meter_provider=MeterProvider(metric_readers=[reader]))
    enforcer = Enforcer(None, handle.tracer_provider, guards=[DenyAll()])
    with pytest.raises(GuardrailViolation):
        enforcer.before_model_call(enforcer.start_run("r"), ModelCall("m"), None)
    decisions = point(points(reader), sc.METRIC_GUARDRAIL_DECISIONS, **{
        sc.GUARDRAIL_NAME: "loop_budget", sc.GUARDRAIL_DECISION: "deny"})
    assert decisions.value == 1
    handle.shutdown()


def test_otlp_configuration_sends_metrics_beside_spans() -> None:
    with otlp_receiver() as receiver:
        handle = spanguard.configure(local_store=False,
                                     otlp_endpoint=receiver.endpoint + "/v1/traces")
        assert handle.meter_provider is not None
        _workload(handle.tracer_provider)
        assert handle.force_flush()
        handle.shutdown()
        assert "/v1/metrics" in receiver.requests
        assert {sc.METRIC_GEN_AI_TOKEN_USAGE, sc.METRIC_TOOL_CALL_COUNT,
                sc.METRIC_COST_USD} <= set(receiver.metrics)
        assert receiver.span_named("invoke_agent planner")


def test_phoenix_preset_gets_no_metric_exporter() -> None:
    handle = spanguard.configure(local_store=False, preset="phoenix",
                                 otlp_endpoint="http://127.0.0.1:9/v1/traces")
    assert handle.meter_provider is None
    handle.shutdown()


def test_worker_records_without_a_flush_and_a_full_queue_drops_instead_of_blocking() -> None:
    reader = InMemoryMetricReader()
    processor = MetricsSpanProcessor(MeterProvider(metric_readers=[reader]),
                                     max_queue=3, interval_seconds=0.01)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")

    def tool_call() -> None:
        tracer.start_span(tool_span_name("a"), attributes=tool_attributes("a")).end()

    def calls() -> int:
        found = points(reader)
        if sc.METRIC_TOOL_CALL_COUNT not in found:
            return 0
        return int(point(found, sc.METRIC_TOOL_CALL_COUNT, **{
            sc.GEN_AI_TOOL_NAME: "a", sc.TOOL_CALL_STATUS: "ok"}).value)

    tool_call()
    deadline = time.monotonic() + 5
    while calls() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls() == 1  # recorded by the worker, no flush needed

    with processor._drain_lock:  # the worker is busy: the queue fills up
        for _ in range(5):
            tool_call()
        assert processor.dropped == 2
    provider.force_flush()
    assert calls() == 4
    provider.shutdown()
    tool_call()  # after shutdown: counted as dropped, never blocks
    assert processor.dropped == 3


def test_a_tool_call_through_the_proxy_is_counted_once_and_its_mcp_side_by_mcp_metrics(
        metered: tuple[TracerProvider, InMemoryMetricReader]) -> None:
    """The agent's execute_tool span and the proxy's SERVER span are the same call seen
    from two processes: the GenAI metrics count it once (the agent's span), the MCP
    conventions' metrics time the proxy's side and the verifier's read-back."""
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import SpanKind

    from spanguard.mcp_bridge import _proxy_spans as proxy_spans

    provider, reader = metered
    tracer = provider.get_tracer("test")
    tree = SpanTree(tracer)
    tree.start("run", None, agent_span_name("planner"), agent_attributes("planner"))
    entry = tree.start("m", "run", chat_span_name("m"), model_attributes("m", "openai"))
    tree.add_usage(entry, 100, 10, 0.01)
    tree.end("m", attributes=usage_attributes(100, 10))
    tool = tree.start("t", "run", tool_span_name("git_commit"), tool_attributes("git_commit"))
    # The proxy's spans, built by the proxy's own attribute code, under the agent's span.
    context = otel_trace.set_span_in_context(tool.span)
    for method, target in (("tools/list", None), ("tools/call", "git_commit")):
        attributes = proxy_spans.request_attributes(method, 7, "2025-11-25", None)
        if target is not None:
            attributes.update(proxy_spans.tool_call_attributes(target, 7, "sha256:x"))
        server = tracer.start_span(proxy_spans.request_span_name(method, target), context,
                                   kind=SpanKind.SERVER, attributes=attributes)
        if target is not None:  # the verifier's read-back, a CLIENT call to the upstream
            read_back = tool_attributes("git_log")
            read_back[sc.MCP_METHOD_NAME] = "tools/call"
            tracer.start_span("tools/call git_log", otel_trace.set_span_in_context(server),
                              kind=SpanKind.CLIENT, attributes=read_back).end()
        server.end()
    tree.end("t")
    tree.end("run")
    provider.force_flush()
    found = points(reader)
    (counted,) = found[sc.METRIC_TOOL_CALL_COUNT]
    assert dict(counted.attributes) == {sc.GEN_AI_TOOL_NAME: "git_commit",
                                        sc.TOOL_CALL_STATUS: "ok"} and counted.value == 1
    assert point(found, sc.METRIC_GEN_AI_OPERATION_DURATION,
                 **{sc.GEN_AI_OPERATION_NAME: "execute_tool"}).count == 1
    server_call = point(found, sc.METRIC_MCP_SERVER_OPERATION_DURATION, **{
        sc.MCP_METHOD_NAME: "tools/call", sc.GEN_AI_TOOL_NAME: "git_commit",
        sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.MCP_PROTOCOL_VERSION: "2025-11-25",
        sc.NETWORK_TRANSPORT: "pipe"})
    assert server_call.count == 1 and server_call.explicit_bounds[:3] == (0.01, 0.02, 0.05)
    assert point(found, sc.METRIC_MCP_SERVER_OPERATION_DURATION, **{
        sc.MCP_METHOD_NAME: "tools/list", sc.MCP_PROTOCOL_VERSION: "2025-11-25",
        sc.NETWORK_TRANSPORT: "pipe"}).count == 1
    assert point(found, sc.METRIC_MCP_CLIENT_OPERATION_DURATION, **{
        sc.MCP_METHOD_NAME: "tools/call", sc.GEN_AI_TOOL_NAME: "git_log",
        sc.GEN_AI_OPERATION_NAME: "execute_tool"}).count == 1
    # Tokens: the model call's, once; never the invoke_agent root's aggregate again.
    (tokens_in,) = [p for p in found[sc.METRIC_GEN_AI_TOKEN_USAGE]
                    if p.attributes[sc.GEN_AI_TOKEN_TYPE] == "input"]
    assert (tokens_in.count, tokens_in.sum) == (1, 100)
