"""Seed 004's taxonomy guards in LangChain and LangGraph, with the real frameworks.

Tool arguments against a tool's ``args_schema`` (HoldGate / HoldMiddleware, which
see the tool), retrieved documents of another tenant dropped before the model
sees them, a tool result of another tenant withheld, answers citing sources the
run never retrieved, and structured output refused or repaired.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import BaseModel

from spanguard import semconv as sc
from spanguard.guardrails import Policy
from spanguard.guardrails.citations import Citations, InvalidCitation
from spanguard.guardrails.structured import StructuredOutput, StructuredOutputError
from spanguard.guardrails.tenant_scope import TenantResultWithheld, TenantScope
from spanguard.guardrails.tool_arguments import ToolArguments
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.plugins.langgraph_holds import HoldGate, HoldMiddleware
from spanguard.plugins.structured_output import structured_output
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import ScriptedModel


def transfer_call(call_id: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "transfer", "id": call_id, "args": args}])


def seen_text(model: ScriptedModel) -> str:
    return "\n".join(str(m.content) for batch in model.seen for m in batch)


# --- tool arguments -----------------------------------------------------------------

def ledger() -> tuple[Any, list[tuple[str, float]]]:
    sent: list[tuple[str, float]] = []

    @tool
    def transfer(to: str, amount: float) -> str:
        """Send money."""
        sent.append((to, amount))
        return f"sent {amount} to {to}"

    return transfer, sent


def test_a_call_off_the_tools_args_schema_never_runs_and_the_model_can_correct_it(
        cap: SpanCapture) -> None:
    transfer, sent = ledger()
    policy = Policy(tool_arguments=ToolArguments())
    model = ScriptedModel(script=[transfer_call("c1", to="bob", amount="lots", memo="x"),
                                  transfer_call("c2", to="bob", amount=5),
                                  AIMessage("done")])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([transfer], wrap_tool_call=HoldGate(policy)))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile(checkpointer=InMemorySaver())
    handler = SpanguardCallbackHandler(cap.tracer_provider, policy=policy)

    app.invoke({"messages": [HumanMessage("pay bob")]},
               {"configurable": {"thread_id": "t"}, "callbacks": [handler]})

    assert sent == [("bob", 5.0)]  # only the corrected call ran
    refusal = model.seen[1][-1]
    assert isinstance(refusal, ToolMessage) and refusal.status == "error"
    assert "$.amount: type 'number'" in str(refusal.content)
    assert "lots" not in str(refusal.content)
    [guardrail] = [s for s in cap.spans() if s.name == "guardrail tool_arguments"]
    assert guardrail.attributes[sc.ERROR_TYPE] == "tool_argument_error"
    assert str(guardrail.attributes[sc.TOOL_SCHEMA_HASH]).startswith("sha256:")
    assert guardrail.attributes[sc.VALIDATION_ERROR_COUNT] == 1


def test_create_agent_middleware_checks_arguments_too(cap: SpanCapture) -> None:
    transfer, sent = ledger()
    model = ScriptedModel(script=[transfer_call("c1", to="bob"), AIMessage("gave up")])
    agent = create_agent(model, [transfer], middleware=[
        HoldMiddleware(Policy(tool_arguments=ToolArguments()),
                       tracer_provider=cap.tracer_provider)])

    agent.invoke({"messages": [HumanMessage("pay bob")]})

    assert sent == []
    refusal = model.seen[1][-1]
    assert isinstance(refusal, ToolMessage) and refusal.status == "error"
    assert "missing required ['amount']" in str(refusal.content)


# --- tenant scope and citations ------------------------------------------------------

class Shelf(BaseRetriever):
    """A retriever over fixed documents, some of them another tenant's."""

    documents: list[Document]

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return list(self.documents)


SHELF = Shelf(documents=[
    Document("acme margins 14%", id="a1", metadata={"tenant_id": "acme"}),
    Document("globex margins 31%", id="g1", metadata={"tenant_id": "globex"}),
    Document("acme forecast", id="a2", metadata={"tenant_id": "acme"}),
])


def rag(model: ScriptedModel) -> Any:
    def answer(question: str) -> AIMessage:
        documents = SHELF.invoke(question)
        context = "\n".join(f"[{d.id}] {d.page_content}" for d in documents)
        return model.invoke([HumanMessage(f"{context}\n\n{question}")])

    return RunnableLambda(answer, name="rag")


def test_another_tenants_documents_never_reach_the_model(cap: SpanCapture) -> None:
    model = ScriptedModel(script=[AIMessage("margins are 14% [source: a1]")])
    handler = SpanguardCallbackHandler(cap.tracer_provider,
                                       policy=Policy(tenant_scope=TenantScope()))

    rag(model).invoke("margins?", {"callbacks": [handler],
                                   "metadata": {"tenant_id": "acme"}})

    assert "globex" not in seen_text(model) and "acme margins 14%" in seen_text(model)
    retrieval = next(s for s in cap.spans() if s.name.startswith("retrieval"))
    assert retrieval.attributes[sc.RETRIEVAL_DOCUMENT_IDS] == ["a1", "a2"]
    blocked = next(s for s in cap.spans() if s.name == "guardrail tenant_scope")
    assert blocked.attributes[sc.ERROR_TYPE] == "tenant_scope_violation"
    assert blocked.attributes[sc.RETRIEVAL_AUTHORIZED_COUNT] == 2
    assert "globex" not in repr(dict(blocked.attributes))


def test_an_answer_citing_an_unretrieved_source_is_refused(cap: SpanCapture) -> None:
    policy = Policy(tenant_scope=TenantScope(), citations=Citations(action="refuse"))
    handler = SpanguardCallbackHandler(cap.tracer_provider, policy=policy)
    config: Any = {"callbacks": [handler], "metadata": {"tenant_id": "acme"}}

    ok = rag(ScriptedModel(script=[AIMessage("14% [source: a1], see [source: a2]")]))
    assert "14%" in str(ok.invoke("margins?", config).content)
    # g1 was retrieved but withheld (another tenant's): citing it is citing the unseen.
    bad = rag(ScriptedModel(script=[AIMessage("31% [source: g1]")]))
    with pytest.raises(InvalidCitation) as refused:
        bad.invoke("margins?", config)
    assert refused.value.invalid == ("g1",)
    chat = [s for s in cap.spans() if s.name.startswith("chat")][-1]
    assert chat.attributes[sc.ERROR_TYPE] == "invalid_citation"


def test_a_flagged_citation_lets_the_answer_through_with_the_finding(
        cap: SpanCapture) -> None:
    handler = SpanguardCallbackHandler(cap.tracer_provider,
                                       policy=Policy(citations=Citations()))
    answer = rag(ScriptedModel(script=[AIMessage("see [source: nowhere]")])).invoke(
        "q", {"callbacks": [handler]})
    assert "nowhere" in str(answer.content)
    chat = next(s for s in cap.spans() if s.name.startswith("chat"))
    [event] = [e for e in chat.events if e["name"] == "guardrail citations"]
    assert event["attributes"][sc.ERROR_TYPE] == "invalid_citation"
    assert event["attributes"][sc.CITATION_INVALID_IDS] == ["nowhere"]


def test_a_tool_result_of_another_tenant_stops_the_run_before_the_model_sees_it(
        cap: SpanCapture) -> None:
    @tool(response_format="content_and_artifact")
    def lookup(key: str) -> tuple[str, dict[str, str]]:
        """Look a record up."""
        return "globex balance 9,000,000", {"tenant_id": "globex"}

    model = ScriptedModel(script=[AIMessage("", tool_calls=[
        {"name": "lookup", "id": "c1", "args": {"key": "k"}}]), AIMessage("done")])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    handler = SpanguardCallbackHandler(cap.tracer_provider,
                                       policy=Policy(tenant_scope=TenantScope()))

    with pytest.raises(TenantResultWithheld):
        graph.compile().invoke({"messages": [HumanMessage("look k up")]},
                               {"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
    assert len(model.seen) == 1 and "9,000,000" not in seen_text(model)
    span = next(s for s in cap.spans() if s.name == "execute_tool lookup")
    assert span.attributes[sc.ERROR_TYPE] == "tenant_scope_violation"


# --- structured output ---------------------------------------------------------------

class Person(BaseModel):
    name: str
    age: int


def person_call(call_id: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "Person", "id": call_id, "args": args}])


def test_invalid_structured_output_is_repaired_within_the_bound(cap: SpanCapture) -> None:
    model = ScriptedModel(script=[AIMessage("Ann, forty"),
                                  person_call("c2", name="Ann", age="forty"),
                                  person_call("c3", name="Ann", age=40)])
    policy = Policy(structured_output=StructuredOutput("repair", max_repairs=2))
    handler = SpanguardCallbackHandler(cap.tracer_provider)

    person = structured_output(model, Person, policy=policy).invoke(
        "who?", {"callbacks": [handler]})

    assert person == Person(name="Ann", age=40)
    assert len(model.seen) == 3
    assert "did not match the required schema: $.age: int_parsing" in str(
        model.seen[2][-1].content)
    assert "forty" not in str(model.seen[2][-1].content)
    failed = [s for s in cap.spans() if s.name == "guardrail structured_output"]
    assert [(s.attributes[sc.REPAIR_ATTEMPT], s.attributes[sc.ERROR_TYPE]) for s in failed] == [
        (1, "syntax_decode_error"), (2, "schema_validation_error")]
    assert len([s for s in cap.spans() if s.name.startswith("chat")]) == 3


async def test_refuse_raises_the_typed_error_and_invents_nothing(cap: SpanCapture) -> None:
    model = ScriptedModel(script=[person_call("c1", name="Ann")])
    guarded = structured_output(model, Person, policy=Policy())
    with pytest.raises(StructuredOutputError) as refused:
        await guarded.ainvoke("who?", {"callbacks": [
            SpanguardCallbackHandler(cap.tracer_provider)]})
    assert refused.value.error_type == "schema_validation_error"
    assert "$.age: missing" in str(refused.value)
    assert len(model.seen) == 1
