"""Tree shapes: what a person thinks happened, for the graphs people build."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from opentelemetry.trace import StatusCode

from spanguard import semconv as sc
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import ScriptedChatModel, add, explode, multiply, react_graph

INPUT = {"messages": [HumanMessage("what is 1+1?")]}

REACT_SHAPE = ("invoke_agent LangGraph", [
    ("agent", [("chat gpt-4o-mini", [])]),
    ("tools", [("execute_tool add", [])]),
    ("agent", [("chat gpt-4o-mini", [])]),
    ("tools", [("execute_tool multiply", [])]),
    ("agent", [("chat gpt-4o-mini", [])]),
])


def handler_for(cap: SpanCapture, **kwargs: Any) -> SpanguardCallbackHandler:
    return SpanguardCallbackHandler(tracer_provider=cap.tracer_provider, **kwargs)


def test_react_agent_tree(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=2, tool_names=["add", "multiply"]),
                        [add, multiply])
    handler = handler_for(cap)
    graph.invoke(INPUT, {"callbacks": [handler]})
    root = cap.tree()
    assert root.shape() == REACT_SHAPE
    assert root.kind == "AGENT"
    assert root.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    agent = root.children[0]
    assert agent.kind == "CHAIN"
    assert agent.attributes[sc.OI_GRAPH_NODE_ID] == "agent"
    assert agent.attributes[sc.LANGGRAPH_STEP] == 1
    assert root.children[1].attributes[sc.LANGGRAPH_STEP] == 2
    tool = root.find("execute_tool add")
    assert tool.kind == "TOOL"
    assert tool.attributes[sc.GEN_AI_TOOL_CALL_ID] == "call_0_0"
    assert tool.attributes[sc.TOOL_ARGS_HASH].startswith("sha256:")
    assert handler.telemetry_errors == 0
    assert len(handler._tree) == 0, "every entry ends with its run"


def test_create_agent_tree(cap: SpanCapture) -> None:
    from langchain.agents import create_agent

    agent = create_agent(ScriptedChatModel(tool_steps=1), [add])
    agent.invoke(INPUT, {"callbacks": [handler_for(cap, agent_name="calculator")]})
    root = cap.tree()
    assert root.name == "invoke_agent calculator"
    assert root.attributes[sc.GEN_AI_AGENT_NAME] == "calculator"
    nodes = [child.name for child in root.children]
    assert nodes == ["model", "tools", "model"]
    assert root.children[0].children[0].name == "chat gpt-4o-mini"
    assert root.children[1].children[0].name == "execute_tool add"


def test_subgraph_nests_under_calling_node(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=0)
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = prompt | model

    def inner(state: MessagesState) -> dict[str, Any]:
        return {"messages": [chain.invoke({"q": "hi"})]}

    sub_builder = StateGraph(MessagesState)
    sub_builder.add_node("inner", inner)
    sub_builder.add_edge(START, "inner")
    sub = sub_builder.compile(name="research")

    def call_sub(state: MessagesState) -> Any:
        return sub.invoke(state)

    builder = StateGraph(MessagesState)
    builder.add_node("call_sub", call_sub)
    builder.add_node("direct_sub", sub)
    builder.add_edge(START, "call_sub")
    builder.add_edge("call_sub", "direct_sub")
    builder.compile().invoke(INPUT, {"callbacks": [handler_for(cap)]})
    assert cap.tree().shape() == ("invoke_agent LangGraph", [
        ("call_sub", [("inner", [("chat gpt-4o-mini", [])])]),
        ("direct_sub", [("inner", [("chat gpt-4o-mini", [])])]),
    ])


def test_keep_plumbing_shows_the_glue(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=0)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model
    chain.invoke({"q": "hi"}, {"callbacks": [handler_for(cap)]})
    assert cap.tree().shape() == ("invoke_agent RunnableSequence", [
        ("chat gpt-4o-mini", [])])
    cap.clear()
    chain.invoke({"q": "hi"}, {"callbacks": [handler_for(cap, keep_plumbing=True)]})
    assert cap.tree().shape() == ("invoke_agent RunnableSequence", [
        ("ChatPromptTemplate", []), ("chat gpt-4o-mini", [])])


def test_routing_functions_fold_unless_kept(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=0), [add])
    graph.invoke(INPUT, {"callbacks": [handler_for(cap, keep_plumbing=True)]})
    assert cap.tree().shape() == ("invoke_agent LangGraph", [
        ("agent", [("agent", [("chat gpt-4o-mini", [])]), ("tools_condition", [])])])
    cap.clear()
    graph.invoke(INPUT, {"callbacks": [handler_for(cap)]})
    assert cap.tree().shape() == ("invoke_agent LangGraph", [
        ("agent", [("chat gpt-4o-mini", [])])])


def test_parallel_tool_calls_are_siblings(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=1, parallel=3,
                                          tool_names=["add", "multiply", "add"]),
                        [add, multiply])
    graph.invoke(INPUT, {"callbacks": [handler_for(cap)]})
    tools = cap.tree().children[1]
    assert tools.name == "tools"
    assert sorted(child.name for child in tools.children) == [
        "execute_tool add", "execute_tool add", "execute_tool multiply"]
    assert {child.attributes[sc.GEN_AI_TOOL_CALL_ID] for child in tools.children} == {
        "call_0_0", "call_0_1", "call_0_2"}


async def test_parallel_tool_calls_are_siblings_async(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=1, parallel=2,
                                          tool_names=["add", "multiply"]), [add, multiply])
    await graph.ainvoke(INPUT, {"callbacks": [handler_for(cap)]})
    tools = cap.tree().children[1]
    assert sorted(child.name for child in tools.children) == [
        "execute_tool add", "execute_tool multiply"]


def test_erroring_tool_is_an_error_span(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=1, tool_names=["explode"]), [explode])
    graph.invoke(INPUT, {"callbacks": [handler_for(cap)]})
    root = cap.tree()
    tool = root.find("execute_tool explode")
    assert tool.span.status == "ERROR"
    assert tool.attributes[sc.ERROR_TYPE] == "RuntimeError"
    assert root.span.status != "ERROR", "the agent handled the tool error and finished"


def test_unhandled_tool_error_fails_the_run(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=1, tool_names=["explode"]), [explode],
                        handle_tool_errors=False)
    with pytest.raises(RuntimeError, match="tool exploded"):
        graph.invoke(INPUT, {"callbacks": [handler_for(cap)]})
    root = cap.tree()
    for name in ("invoke_agent LangGraph", "tools", "execute_tool explode"):
        node = root.find(name)
        assert node.span.status == "ERROR", name
        assert node.attributes[sc.ERROR_TYPE] == "RuntimeError"
    assert root.find("agent").span.status != "ERROR"


def test_graph_interrupt_is_not_an_error(cap: SpanCapture) -> None:
    def review(state: MessagesState) -> dict[str, Any]:
        answer = interrupt("approve?")
        return {"messages": [HumanMessage(str(answer))]}

    builder = StateGraph(MessagesState)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    graph = builder.compile(checkpointer=InMemorySaver())
    config: Any = {"callbacks": [handler_for(cap)], "configurable": {"thread_id": "t-1"}}
    result = graph.invoke(INPUT, config)
    assert "__interrupt__" in result
    root = cap.tree()
    assert root.shape() == ("invoke_agent LangGraph", [("review", [])])
    for node in root.walk():
        assert node.span.status != "ERROR", node.name
        assert sc.ERROR_TYPE not in node.attributes
    assert root.find("review").attributes[sc.RUN_INTERRUPTED] is True
    cap.clear()
    graph.invoke(Command(resume="yes"), config)
    assert all(node.span.status != "ERROR" for node in cap.tree().walk())


def _run_all_ways(graph: Any, cap: SpanCapture) -> dict[str, list[Any]]:
    shapes: dict[str, list[Any]] = {}

    def collect(way: str) -> None:
        shapes[way] = [tree.shape() for tree in cap.trees()]
        cap.clear()

    handler = handler_for(cap)
    config: Any = {"callbacks": [handler]}
    graph.invoke(INPUT, config)
    collect("invoke")
    asyncio.run(graph.ainvoke(INPUT, config))
    collect("ainvoke")
    list(graph.stream(INPUT, config))
    collect("stream")

    async def consume() -> None:
        async for _ in graph.astream(INPUT, config):
            pass
        cap_shapes = [tree.shape() for tree in cap.trees()]
        shapes["astream"] = cap_shapes
        cap.clear()
        async for _ in graph.astream_events(INPUT, config, version="v2"):
            pass

    asyncio.run(consume())
    collect("astream_events")
    graph.batch([INPUT, INPUT], config)
    collect("batch")
    assert handler.telemetry_errors == 0
    return shapes


def test_every_way_of_running_gives_the_same_tree(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=2, tool_names=["add", "multiply"]),
                        [add, multiply])
    shapes = _run_all_ways(graph, cap)
    for way, trees in shapes.items():
        expected = 2 if way == "batch" else 1
        assert trees == [REACT_SHAPE] * expected, way


def test_graph_inside_an_active_span_is_its_child(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=1), [add])
    tracer = cap.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("http request") as outer:
        graph.invoke(INPUT, {"callbacks": [handler_for(cap)]})
    root = cap.tree()
    assert root.name == "http request"
    assert [child.name for child in root.children] == ["invoke_agent LangGraph"]
    agent_root = root.children[0]
    assert agent_root.span.trace_id == format(outer.get_span_context().trace_id, "032x")


def test_retriever_span_counts_documents(cap: SpanCapture) -> None:
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class Shelf(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document("a", id="doc-1"), Document("b", id="doc-2")]

    Shelf().invoke("where?", {"callbacks": [handler_for(cap)]})
    root = cap.tree()
    assert root.name == "retrieval Shelf"
    assert root.kind == "RETRIEVER"
    assert root.attributes[sc.RETRIEVAL_CANDIDATE_COUNT] == 2
    assert root.attributes[sc.RETRIEVAL_DOCUMENT_IDS] == ["doc-1", "doc-2"]
    assert sc.GEN_AI_RETRIEVAL_QUERY_TEXT not in root.attributes


def test_model_error_marks_span_and_root(cap: SpanCapture) -> None:
    class Broken(ScriptedChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise TimeoutError("provider timed out")

    graph = react_graph(Broken(), [add])
    with pytest.raises(TimeoutError):
        graph.invoke(INPUT, {"callbacks": [handler_for(cap)]})
    chat = cap.tree().find("chat gpt-4o-mini")
    assert chat.span.status == "ERROR"
    assert chat.attributes[sc.ERROR_TYPE] == "timeout"  # the retry taxonomy (docs/retry.md)
    assert cap.tree().span.status == StatusCode.ERROR.name
