"""Langfuse's own attributes: written for a Langfuse destination only, from one module.

The spans a run makes carry none (Phoenix, a Collector and the local store get the same
spans as before); the ``langfuse`` preset adds them on the way to Langfuse, and
``langfuse_attributes=True`` to every OTLP destination.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

import spanguard
from spanguard import attributes as attrs
from spanguard import semconv as sc
from spanguard.exporters.langfuse import LangfuseOptions, langfuse_attributes
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.spantree import SpanTree
from spanguard.store import TraceStore
from spanguard.testing import capture
from tests.integration import langfuse_rules
from tests.otlp_receiver import otlp_receiver
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph


def _run(handle: spanguard.SpanguardHandle) -> None:
    handler = SpanguardCallbackHandler(handle.tracer_provider, capture_content=True)
    graph = react_graph(ScriptedChatModel(tool_steps=1), [add])
    for _ in graph.stream({"messages": [HumanMessage("add 1 and 2 for bob@example.com")]},
                          {"callbacks": [handler], "tags": ["support", "beta"],
                           "metadata": {"user_id": "bob", "thread_id": "t-1"}},
                          stream_mode="messages"):
        pass


def test_the_langfuse_preset_adds_langfuses_attributes_on_its_way_there_only(
        tmp_path: Path) -> None:
    with otlp_receiver() as langfuse, otlp_receiver() as collector:
        handle = spanguard.configure(
            preset="langfuse", langfuse_host=langfuse.endpoint, langfuse_public_key="pk-lf-1",
            langfuse_secret_key="sk-lf-1", home=tmp_path, langfuse_environment="staging",
            langfuse_tags=["spanguard"])
        # A second, generic destination beside it: it must not get Langfuse's keys.
        handle.tracer_provider.add_span_processor(_simple(collector.endpoint))
        _run(handle)
        handle.shutdown()
    to_langfuse = {s["name"]: s["attributes"] for s in langfuse.spans}
    root = to_langfuse["invoke_agent LangGraph"]
    assert root[sc.LANGFUSE_TRACE_NAME] == "LangGraph"
    assert root[sc.LANGFUSE_TRACE_INPUT] == "add 1 and 2 for [REDACTED:email]"  # redacted first
    assert root[sc.LANGFUSE_TRACE_OUTPUT].strip() == "the answer is 42"  # as streamed
    assert root[sc.LANGFUSE_TRACE_TAGS] == ["spanguard", "support", "beta"]
    assert all(s["attributes"][sc.LANGFUSE_ENVIRONMENT] == "staging" for s in langfuse.spans)
    chats = [s for s in langfuse.spans if s["name"] == "chat gpt-4o-mini"]
    assert len(chats) == 2
    for chat in chats:
        a = chat["attributes"]
        started = datetime.fromisoformat(
            a[sc.LANGFUSE_OBSERVATION_COMPLETION_START_TIME].replace("Z", "+00:00"))
        ttft = a[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
        assert abs(started.timestamp() - (chat["start_time_unix_nano"] / 1e9 + ttft)) < 1e-5
        usage = json.loads(a[sc.LANGFUSE_OBSERVATION_USAGE_DETAILS])
        assert usage == {"input": a[sc.GEN_AI_USAGE_INPUT_TOKENS],
                         "output": a[sc.GEN_AI_USAGE_OUTPUT_TOKENS],
                         "total": a[sc.GEN_AI_USAGE_INPUT_TOKENS]
                         + a[sc.GEN_AI_USAGE_OUTPUT_TOKENS]}
        assert json.loads(a[sc.LANGFUSE_OBSERVATION_COST_DETAILS]) == {
            "total": a[sc.COST_USD]}
    # The same spans elsewhere: no Langfuse attribute at all.
    for span in collector.spans:
        assert not [k for k in span["attributes"] if k.startswith("langfuse.")], span["name"]
    stored = TraceStore.in_home(tmp_path).spans()
    assert stored and not [k for s in stored for k in s.attributes if k.startswith("langfuse.")]
    # And Langfuse reads them as documented.
    (trace,) = [t for t in langfuse_rules.ingest(langfuse.spans).values()
                if t.name == "LangGraph"]
    assert trace.tags == ["spanguard", "support", "beta"] and trace.environment == "staging"
    assert trace.user_id and trace.session_id and trace.input and trace.output


def _simple(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    return SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))


def test_langfuse_attributes_can_go_to_every_otlp_destination(tmp_path: Path) -> None:
    """A Collector that forwards to Langfuse: the option, not the preset."""
    with otlp_receiver() as collector:
        handle = spanguard.configure(otlp_endpoint=f"{collector.endpoint}/v1/traces",
                                     home=tmp_path, local_store=False,
                                     langfuse_attributes=True)
        _run(handle)
        handle.shutdown()
    root = next(s for s in collector.spans if s["name"] == "invoke_agent LangGraph")
    assert root["attributes"][sc.LANGFUSE_TRACE_NAME] == "LangGraph"


def test_a_governed_tool_span_reads_as_its_governance_in_langfuse() -> None:
    cap = capture()
    tree = SpanTree(cap.tracer_provider.get_tracer("test"))
    tree.start("run", None, attrs.agent_span_name("a"), attrs.agent_attributes("a"))
    held = tree.start("held", "run", "execute_tool pay", attrs.tool_attributes("pay"))
    held.span.set_attributes({sc.HOLD_ID: "hold_1", sc.HOLD_STATUS: "pending",
                              sc.HOLD_DECISION: "created"})
    tree.end("held", error_type="held_for_approval")
    done = tree.start("done", "run", "execute_tool pay", attrs.tool_attributes("pay"))
    done.span.set_attributes({sc.HOLD_ID: "hold_1", sc.HOLD_STATUS: "executed",
                              sc.HOLD_DECISION: "approved", sc.HOLD_CHECKER: "maria",
                              sc.VERIFICATION_STATUS: "verified",
                              sc.VERIFICATION_REASON: "ledger shows it"})
    tree.end("done")
    tree.end("run")
    spans = {s.attributes.get(sc.HOLD_DECISION): s for s in cap.exporter.get_finished_spans()}
    held_extra = langfuse_attributes(spans["created"], LangfuseOptions())
    assert held_extra[sc.LANGFUSE_OBSERVATION_STATUS_MESSAGE].startswith("hold hold_1 created")
    assert held_extra[sc.LANGFUSE_OBSERVATION_LEVEL] == "WARNING"  # waiting, not broken
    done_extra = langfuse_attributes(spans["approved"], LangfuseOptions())
    assert done_extra[sc.LANGFUSE_OBSERVATION_STATUS_MESSAGE] == (
        "hold hold_1 approved by maria; verification verified: ledger shows it")
    assert sc.LANGFUSE_OBSERVATION_LEVEL not in done_extra
