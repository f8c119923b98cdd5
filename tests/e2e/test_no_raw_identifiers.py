"""No raw identifier from run metadata reaches an exporter.

User, tenant and conversation/session/thread ids arrive raw in LangGraph run
metadata; every span that leaves the process carries keyed hashes only. Proven
on real runs (a LangGraph ReAct agent, and a LangGraph agent whose tool queries
a LlamaIndex index, plus a LlamaIndex query on its own), exported through
``spanguard.testing.capture`` and through OTLP to a real local receiver, where
the raw request bodies are searched byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from llama_index.core.llms import MockLLM
from opentelemetry.sdk.trace import TracerProvider

import spanguard
from spanguard import semconv as sc
from spanguard.plugins import llama_index as sg_llama
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.report import build_report
from spanguard.testing import SpanCapture
from tests.e2e.test_langgraph_llamaindex import QUESTION
from tests.e2e.test_langgraph_llamaindex import ScriptedChatModel as PolicyLookupModel
from tests.otlp_receiver import otlp_receiver
from tests.plugins._llama_index_fixtures import build_index
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

HASH_KEY = "no-raw-identifiers-test-key-0123456789"
USER, TENANT = "alice.martin@example.com", "acme-corp-eu"
# One run per way an application names its conversation.
RUNS: tuple[dict[str, Any], ...] = (
    {"metadata": {"user_id": USER, "tenant_id": TENANT}, "configurable": {"thread_id": "thr-5531"}},
    {"metadata": {"user_id": USER, "tenant_id": TENANT, "session_id": "sess-4471"}},
    {"metadata": {"user_id": USER, "tenant_id": TENANT, "conversation_id": "conv-8812"},
     "configurable": {"thread_id": "thr-0042"}},
)
RAW = (USER, TENANT, "thr-5531", "sess-4471", "conv-8812", "thr-0042")


def _run_everything(provider: TracerProvider) -> None:
    react = react_graph(ScriptedChatModel(tool_steps=1), [add])
    for config in RUNS:
        handler = SpanguardCallbackHandler(provider)
        react.invoke({"messages": [HumanMessage("what is 2 + 3?")]},
                     {**config, "callbacks": [handler]})
    engine = build_index(index_id="handbook").as_query_engine(llm=MockLLM())

    @tool
    def lookup_policy(question: str) -> str:
        """Look up the company handbook."""
        return str(engine.query(question))

    agent = create_agent(PolicyLookupModel(), tools=[lookup_policy])
    with _llama_index(provider):
        agent.invoke({"messages": [("user", QUESTION)]}, config={
            **RUNS[2], "callbacks": [SpanguardCallbackHandler(provider)]})
        engine.query("What is the refund window?")  # a LlamaIndex run on its own


@contextmanager
def _llama_index(provider: TracerProvider) -> Iterator[None]:
    sg_llama.instrument(provider)
    try:
        yield
    finally:
        sg_llama.uninstrument()


def _hashed(handle: spanguard.SpanguardHandle) -> set[str]:
    return {handle.hasher(value) for value in RAW}


def test_capture_sees_only_keyed_hashes_of_run_identifiers(cap: SpanCapture) -> None:
    handle = spanguard.configure(local_store=False, hash_key=HASH_KEY)
    _run_everything(cap.tracer_provider)
    spans = cap.spans()
    assert {s.name for s in spans} >= {"invoke_agent LangGraph", "execute_tool lookup_policy",
                                       "retrieval handbook"}
    dumped = json.dumps([s.to_json() for s in spans], default=str, ensure_ascii=False)
    resources = json.dumps([dict(s.resource.attributes)
                            for s in cap.exporter.get_finished_spans()], default=str)
    for raw in RAW:
        assert raw not in dumped and raw not in resources, raw
    conversations = {s.attributes.get(sc.GEN_AI_CONVERSATION_ID) for s in spans} - {None}
    assert conversations == {handle.hasher("thr-5531"), handle.hasher("sess-4471"),
                             handle.hasher("conv-8812")}
    assert {s.attributes.get(sc.USER_HASH) for s in spans} - {None} == {handle.hasher(USER)}
    handle.shutdown()


def test_otlp_request_bodies_hold_no_raw_identifier() -> None:
    with otlp_receiver() as receiver:
        handle = spanguard.configure(otlp_endpoint=receiver.endpoint + "/v1/traces",
                                     hash_key=HASH_KEY)
        _run_everything(handle.tracer_provider)
        handle.shutdown()
    bodies = [body for path, body in zip(receiver.requests, receiver.bodies, strict=True)
              if path.endswith("/v1/traces")]
    assert bodies
    assert {span["name"] for span in receiver.spans} >= {
        "invoke_agent LangGraph", "execute_tool lookup_policy", "retrieval handbook"}
    for raw in RAW:
        assert all(raw.encode() not in body for body in bodies), raw
    sessions = {span["attributes"].get(sc.OI_SESSION_ID) for span in receiver.spans} - {None}
    assert sessions <= _hashed(handle) and len(sessions) == 3
    tenants = {span["attributes"].get(sc.TENANT_HASH) for span in receiver.spans} - {None}
    assert tenants == {handle.hasher(TENANT)}


def test_raw_conversation_ids_leave_only_when_configured_and_users_stay_hashed() -> None:
    with otlp_receiver() as receiver:
        handle = spanguard.configure(otlp_endpoint=receiver.endpoint + "/v1/traces",
                                     hash_key=HASH_KEY, raw_conversation_ids=True)
        _run_everything(handle.tracer_provider)
        handle.shutdown()
    sessions = {span["attributes"].get(sc.OI_SESSION_ID) for span in receiver.spans} - {None}
    assert sessions == {"thr-5531", "sess-4471", "conv-8812"}
    for raw in (USER, TENANT):
        assert all(raw.encode() not in body for body in receiver.bodies), raw


def test_outcome_by_raw_conversation_id_finds_the_hashed_runs_and_report_counts_it() -> None:
    handle = spanguard.configure(hash_key=HASH_KEY)
    react = react_graph(ScriptedChatModel(tool_steps=1), [add])
    react.invoke({"messages": [HumanMessage("2 + 3?")]},
                 {**RUNS[0], "callbacks": [SpanguardCallbackHandler(handle.tracer_provider)]})
    handle.force_flush()
    assert handle.store is not None
    (run,) = handle.store.roots(conversation_id=handle.hasher("thr-5531"))

    context = spanguard.record_outcome(conversation_id="thr-5531", action="converted")
    handle.force_flush()
    outcome = next(s for s in handle.store.spans() if s.name == "user_outcome converted")
    assert outcome.attributes[sc.SESSION_ID] == handle.hasher("thr-5531")
    exported = next(s for s in handle.store.spans() if s.span_id == format(context.span_id,
                                                                          "016x"))
    assert exported.trace_id != run.trace_id  # a new trace in the same session
    groups = build_report(handle.store.spans(), "agent")
    assert [group.outcomes["converted"] for group in groups] == [1]
    assert "thr-5531" not in json.dumps([s.to_json() for s in handle.store.spans()])
    handle.shutdown()
