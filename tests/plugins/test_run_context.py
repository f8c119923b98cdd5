"""One run, one identity across frameworks: a LlamaIndex query inside a LangGraph tool (or under
``spanguard.run_context``) carries the run's hashed user/tenant/session on its spans and
charges the tenant's window budget, like the agent run that called it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

import spanguard
from spanguard import semconv as sc
from spanguard.guardrails.audit import open_audit_log
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.window import WindowBudget, WindowBudgetExceeded
from spanguard.hashing import KeyedHasher
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.testing import SpanCapture, SpanNode
from tests.plugins._llama_index_fixtures import MeteredLLM, build_index, instrumented
from tests.plugins.lc_fakes import ScriptedChatModel, react_graph

HASHER = KeyedHasher(b"run-context-test-key")


def tenant_calls(limit: int) -> Policy:
    return Policy(window_budgets=(WindowBudget("calls", "tenant", window="hour",
                                               max_model_calls=limit),))


def _ids(node: SpanNode) -> tuple[Any, Any, Any]:
    attrs = node.attributes
    return (attrs.get(sc.USER_HASH), attrs.get(sc.TENANT_HASH),
            attrs.get(sc.GEN_AI_CONVERSATION_ID))


def _llama_spans(root: SpanNode) -> list[SpanNode]:
    """The spans the LlamaIndex query made: everything below the tool that ran it."""
    return list(root.find("execute_tool lookup").walk())[1:]


def _rag_agent(engine: Any, *, asynchronous: bool = False) -> Any:
    """The agent calls ``lookup`` once; the tool asks the LlamaIndex query engine."""
    if asynchronous:
        @tool
        async def lookup(a: int, b: int) -> str:
            """Look up the handbook."""
            return str(await engine.aquery("How long do refunds take?"))
    else:
        @tool
        def lookup(a: int, b: int) -> str:
            """Look up the handbook."""
            return str(engine.query("How long do refunds take?"))

    return react_graph(ScriptedChatModel(tool_names=["lookup"], tool_steps=1), [lookup])


def _config(handler: SpanguardCallbackHandler, **metadata: str) -> dict[str, Any]:
    return {"callbacks": [handler], "metadata": metadata}


# --- under spanguard.run_context -------------------------------------------------------

def test_a_query_under_run_context_carries_the_hashed_ids_on_every_span(
        cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM())
    with instrumented(cap, hasher=HASHER), spanguard.run_context(
            user_id="u-1", tenant_id="acme", session_id="chat-7"):
        engine.query("How long do refunds take?")
    spans = list(cap.tree().walk())
    assert len(spans) > 3
    for node in spans:
        assert _ids(node) == (HASHER("u-1"), HASHER("acme"), HASHER("chat-7")), node.name
        assert "acme" not in node.attributes.values() and "u-1" not in node.attributes.values()


def test_a_query_outside_any_run_context_carries_no_ids(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM())
    with instrumented(cap, hasher=HASHER):
        engine.query("refunds?")
    assert {_ids(node) for node in cap.tree().walk()} == {(None, None, None)}


def test_run_context_tenants_have_separate_window_budgets(cap: SpanCapture) -> None:
    llm = MeteredLLM()
    engine = build_index().as_query_engine(llm=llm)
    with instrumented(cap, policy=tenant_calls(1)):
        with spanguard.run_context(tenant_id="acme"):
            engine.query("refunds?")
            with pytest.raises(WindowBudgetExceeded):
                engine.query("refunds again?")
        with spanguard.run_context(tenant_id="globex"):
            engine.query("refunds?")  # another tenant's budget
        engine.query("refunds?")  # no tenant: the shared anonymous budget
    assert llm.calls == 3


def test_the_maker_comes_from_instrument_else_from_the_run_context(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM())
    for identity, context_identity, expected in [(None, "alice", "alice"),
                                                 ("svc-rag", "alice", "svc-rag")]:
        with instrumented(cap, policy=tenant_calls(1), identity=identity), \
                spanguard.run_context(tenant_id=f"t-{expected}", identity=context_identity):
            engine.query("refunds?")
            with pytest.raises(WindowBudgetExceeded):
                engine.query("refunds again?")
    refusals = [r for r in open_audit_log().records() if r.event == "window_budget.refused"]
    assert [r.actor for r in refusals] == ["alice", "svc-rag"]


# --- inside a LangGraph tool -----------------------------------------------------------

def test_a_query_inside_a_langgraph_tool_carries_the_agent_runs_ids(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM())
    handler = SpanguardCallbackHandler(cap.tracer_provider, hasher=HASHER)
    with instrumented(cap, hasher=HASHER):
        _rag_agent(engine).invoke({"messages": [HumanMessage("refunds?")]}, _config(
            handler, user_id="u-1", tenant_id="acme", thread_id="chat-7"))
    root = cap.tree()
    llama = _llama_spans(root)
    assert llama and any(node.kind == "LLM" for node in llama)
    for node in root.walk():
        assert _ids(node) == (HASHER("u-1"), HASHER("acme"), HASHER("chat-7")), node.name
    assert spanguard.current_run_context() is None, "published only while the tool ran"


def test_the_agent_and_its_llama_index_tool_share_the_tenants_budget(cap: SpanCapture) -> None:
    """Two model calls per tenant per hour: the agent's first call, then the tool's LlamaIndex
    call; the agent's second call is refused because the tool's call was acme's too (charged
    to an anonymous key, acme would have had room for it)."""
    policy = tenant_calls(2)
    llm = MeteredLLM()
    engine = build_index().as_query_engine(llm=llm)
    handler = SpanguardCallbackHandler(cap.tracer_provider, policy=policy)
    with instrumented(cap, policy=policy):
        for tenant, llm_calls in [("acme", 1), ("globex", 2)]:
            cap.clear()
            with pytest.raises(WindowBudgetExceeded) as refused:
                _rag_agent(engine).invoke({"messages": [HumanMessage("refunds?")]},
                                          _config(handler, tenant_id=tenant))
            # globex's own budget admitted its first two calls: acme's spend is not its
            assert llm.calls == llm_calls
            assert refused.value.spent == 2  # the agent's call and the LlamaIndex call
            root = cap.tree()
            tenants = {node.attributes[sc.TENANT_HASH] for node in root.walk()
                       if node.kind != "GUARDRAIL"}  # the refusal is the enforcer's own span
            assert tenants == {root.attributes[sc.TENANT_HASH]}
            assert _llama_spans(root)[0].find("text_completion gpt-4o-mini").span.status != "ERROR"


def test_concurrent_threads_each_tag_their_own_tenant(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM())
    handler = SpanguardCallbackHandler(cap.tracer_provider, hasher=HASHER)
    agent = _rag_agent(engine)
    errors: list[BaseException] = []

    def run(tenant: str) -> None:
        try:
            agent.invoke({"messages": [HumanMessage("refunds?")]},
                         _config(handler, tenant_id=tenant))
        except BaseException as exc:  # surfaced below, with the thread's tenant
            errors.append(exc)

    with instrumented(cap, hasher=HASHER):
        threads = [threading.Thread(target=run, args=(f"tenant-{i}",)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    _check_one_tenant_per_trace(cap, 8)


async def test_concurrent_async_runs_each_tag_their_own_tenant(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM())
    handler = SpanguardCallbackHandler(cap.tracer_provider, hasher=HASHER)
    agent = _rag_agent(engine, asynchronous=True)
    with instrumented(cap, hasher=HASHER):
        await asyncio.gather(*(agent.ainvoke({"messages": [HumanMessage("refunds?")]},
                                             _config(handler, tenant_id=f"tenant-{i}"))
                               for i in range(8)))
    _check_one_tenant_per_trace(cap, 8)


def _check_one_tenant_per_trace(cap: SpanCapture, runs: int) -> None:
    roots = cap.trees()
    assert len(roots) == runs, cap.render()
    tenants = set()
    for root in roots:
        assert _llama_spans(root), "the query's spans are in the agent's trace"
        hashes = {node.attributes.get(sc.TENANT_HASH) for node in root.walk()}
        assert hashes == {root.attributes[sc.TENANT_HASH]}
        tenants.update(hashes)
    assert tenants == {HASHER(f"tenant-{i}") for i in range(runs)}


# --- the LangChain handler reads the run context too ----------------------------------

def test_a_langchain_run_takes_what_its_metadata_lacks_from_the_run_context(
        cap: SpanCapture) -> None:
    handler = SpanguardCallbackHandler(cap.tracer_provider, hasher=HASHER)
    graph = react_graph(ScriptedChatModel(), [])
    with spanguard.run_context(user_id="u-1", tenant_id="acme", session_id="chat-7"):
        graph.invoke({"messages": [HumanMessage("hi")]}, _config(handler, tenant_id="globex"))
    assert _ids(cap.tree()) == (HASHER("u-1"), HASHER("globex"), HASHER("chat-7"))
