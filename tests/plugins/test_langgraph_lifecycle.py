"""Agent lifecycles in LangGraph: pause and resume, early stops, sub-agents, double attach.

Every scenario ends with the capture's ledger check (``tests/conftest.py``): each span
that started has ended.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from opentelemetry.sdk.trace import ReadableSpan

from spanguard import semconv as sc
from spanguard.guardrails import HoldRules, Policy, approve
from spanguard.hashing import KeyedHasher
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.plugins.langgraph_holds import HoldMiddleware
from spanguard.resume import MemoryPausePoints
from spanguard.testing import SpanCapture, SpanNode
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

INPUT = {"messages": [HumanMessage("what is 1+1?")]}


def handler_for(cap: SpanCapture, **kwargs: Any) -> SpanguardCallbackHandler:
    return SpanguardCallbackHandler(cap.tracer_provider, **kwargs)


def raw(cap: SpanCapture, node: SpanNode) -> ReadableSpan:
    """The SDK span behind a tree node (for its links, which the tree does not keep)."""
    return next(s for s in cap.exporter.get_finished_spans()
                if format(s.context.span_id, "016x") == node.span.span_id)


def agents_under(node: SpanNode) -> list[SpanNode]:
    return [child for child in node.children if child.name.startswith("invoke_agent")]


def assert_no_errors(root: SpanNode) -> None:
    for node in root.walk():
        assert node.span.status != "ERROR", node.name
        assert sc.ERROR_TYPE not in node.attributes, node.name


# --- pause, decision, resume ------------------------------------------------------


@tool
def pay(a: int, b: int) -> str:
    """Pay a to b."""
    return f"paid {a} to {b}"


def test_human_in_the_loop_pause_decision_and_resume_are_one_trace(cap: SpanCapture) -> None:
    agent = create_agent(ScriptedChatModel(tool_names=["pay"], tool_steps=1), [pay],
                         middleware=[HumanInTheLoopMiddleware(interrupt_on={"pay": True})],
                         checkpointer=InMemorySaver(), name="cashier")
    config: Any = {"configurable": {"thread_id": "hitl-1"}, "callbacks": [handler_for(cap)]}
    paused = agent.invoke(INPUT, config)
    assert "__interrupt__" in paused
    done = agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
    assert any(isinstance(m, ToolMessage) and m.content == "paid 0 to 0"
               for m in done["messages"])

    story = cap.tree()  # one trace: the resumed run is a child of the paused one
    [resumed] = agents_under(story)
    assert story.name == resumed.name == "invoke_agent cashier"
    assert story.attributes[sc.RUN_STATUS] == "paused"
    assert resumed.attributes[sc.RUN_STATUS] == "ok"
    assert resumed.attributes[sc.RUN_RESUMED] is True
    assert resumed.attributes[sc.RESUME_DECISIONS] == ["approve"]  # the decision, visible
    assert resumed.attributes[sc.RUN_PAUSED_SECONDS] >= 0
    [executed] = story.find_all("execute_tool pay")
    assert executed in list(resumed.walk())
    [link] = raw(cap, resumed).links
    assert format(link.context.span_id, "016x") == story.span.span_id
    assert link.attributes == {sc.LINK_TYPE: sc.LINK_RESUMES}
    assert_no_errors(story)
    lines = cap.render().splitlines()  # what `spanguard traces show` prints
    assert "paused" in lines[0] and any(
        "invoke_agent cashier" in line and "resumed" in line for line in lines[1:])


def test_rejection_is_recorded_as_the_decision(cap: SpanCapture) -> None:
    agent = create_agent(ScriptedChatModel(tool_names=["pay"], tool_steps=1), [pay],
                         middleware=[HumanInTheLoopMiddleware(interrupt_on={"pay": True})],
                         checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "hitl-2"}, "callbacks": [handler_for(cap)]}
    agent.invoke(INPUT, config)
    agent.invoke(Command(resume={"decisions": [{"type": "reject", "message": "no way"}]}),
                 config)
    [resumed] = agents_under(cap.tree())
    assert resumed.attributes[sc.RESUME_DECISIONS] == ["reject"]
    assert "no way" not in str(resumed.attributes)  # the person's words are content
    assert not cap.tree().find_all("execute_tool pay")


def interrupting_graph(checkpointer: Any = None) -> Any:
    def review(state: MessagesState) -> dict[str, Any]:
        answer = interrupt({"question": "ship it?"})
        return {"messages": [HumanMessage(f"reviewer said {answer}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    builder.add_edge("review", END)
    return builder.compile(checkpointer=checkpointer or InMemorySaver(), name="shipper")


def test_plain_interrupt_resume_hashes_the_answer_with_the_key(cap: SpanCapture) -> None:
    hasher = KeyedHasher(b"r" * 32)
    graph = interrupting_graph()
    config: Any = {"configurable": {"thread_id": "plain-1"},
                   "callbacks": [handler_for(cap, hasher=hasher)]}
    graph.invoke(INPUT, config)
    graph.invoke(Command(resume="yes, ship"), config)
    story = cap.tree()
    [resumed] = agents_under(story)
    assert (story.attributes[sc.RUN_STATUS], resumed.attributes[sc.RUN_STATUS]) == (
        "paused", "ok")
    assert story.find("review").attributes[sc.RUN_INTERRUPTED] is True
    assert resumed.attributes[sc.RESUME_VALUE_HASH] == hasher('"yes, ship"')
    assert "yes, ship" not in str(resumed.attributes)
    assert_no_errors(story)


def test_a_hold_paused_twice_then_approved_is_one_trace(cap: SpanCapture) -> None:
    """A spanguard hold: the pause, a resume before anyone decided (paused again), the
    approval, and the resumed run that executes: one trace, each run under the one it
    resumes, the approval recorded where the call was admitted."""
    sent: list[tuple[int, int]] = []

    @tool
    def payments_send(a: int, b: int) -> str:
        """Send a payment."""
        sent.append((a, b))
        return "sent"

    middleware = HoldMiddleware(Policy(holds=HoldRules(tools=("payments_*",))),
                                identity="alice", tracer_provider=cap.tracer_provider)
    agent = create_agent(ScriptedChatModel(tool_names=["payments_send"], tool_steps=1),
                         [payments_send], middleware=[middleware],
                         checkpointer=InMemorySaver(), name="payer")
    config: Any = {"configurable": {"thread_id": "hold-1"}, "callbacks": [handler_for(cap)]}
    hold_id = agent.invoke(INPUT, config)["__interrupt__"][0].value["hold_id"]
    agent.invoke(Command(resume=True), config)  # nobody decided yet: paused again
    approve(hold_id, "carol", "ok")
    agent.invoke(Command(resume=True), config)
    assert sent == [(0, 0)]

    first = cap.tree()
    [second] = agents_under(first)
    [third] = agents_under(second)
    assert [n.attributes[sc.RUN_STATUS] for n in (first, second, third)] == [
        "paused", "paused", "ok"]
    for earlier, later in ((first, second), (second, third)):
        [link] = raw(cap, later).links
        assert format(link.context.span_id, "016x") == earlier.span.span_id
    assert first.find("guardrail holds").attributes[sc.HOLD_ID] == hold_id
    tools = next(n for n in third.children if n.name == "tools")
    [admitted] = [e for e in tools.span.events if e["name"] == "guardrail holds"]
    assert admitted["attributes"][sc.HOLD_ID] == hold_id
    assert admitted["attributes"][sc.GUARDRAIL_DECISION] == "allow"  # the approval
    [executed] = third.find_all("execute_tool payments_send")
    assert executed.span.status != "ERROR"
    assert_no_errors(first)


def test_resume_inside_another_span_stays_in_the_paused_trace(cap: SpanCapture) -> None:
    graph = interrupting_graph()
    config: Any = {"configurable": {"thread_id": "web-1"}, "callbacks": [handler_for(cap)]}
    graph.invoke(INPUT, config)
    tracer = cap.tracer_provider.get_tracer("web")
    with tracer.start_as_current_span("POST /approve") as request:
        graph.invoke(Command(resume="ok"), config)
    story, web = cap.trees()
    assert web.name == "POST /approve" and not web.children
    [resumed] = agents_under(story)
    links = {link.attributes[sc.LINK_TYPE]: link.context.span_id
             for link in raw(cap, resumed).links}
    assert links == {sc.LINK_RESUMES: int(story.span.span_id, 16),
                     sc.LINK_CALLED_FROM: request.get_span_context().span_id}


def test_a_new_request_on_a_paused_thread_is_not_a_resume(cap: SpanCapture) -> None:
    graph = interrupting_graph()
    config: Any = {"configurable": {"thread_id": "t-new"}, "callbacks": [handler_for(cap)]}
    graph.invoke(INPUT, config)
    graph.invoke({"messages": [HumanMessage("something else")]}, config)
    first, second = cap.trees()
    assert sc.RUN_RESUMED not in second.attributes
    assert first.span.trace_id != second.span.trace_id


def test_when_the_record_is_gone_the_resumed_run_starts_a_new_trace(
        cap: SpanCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record pushed out by newer pauses (the map is bounded) cannot be linked: the
    resumed run is a trace of its own, marked resumed, with no parent and no link."""
    points = MemoryPausePoints(max_entries=2)
    monkeypatch.setattr("spanguard.plugins.langchain.pause_points", lambda: points)
    graph = interrupting_graph()
    handler = handler_for(cap)
    for thread in ("old", "newer", "newest"):
        graph.invoke(INPUT, {"configurable": {"thread_id": thread}, "callbacks": [handler]})
    assert len(points) == 2
    cap.clear()
    graph.invoke(Command(resume="late"), {"configurable": {"thread_id": "old"},
                                          "callbacks": [handler]})
    graph.invoke(Command(resume="in time"), {"configurable": {"thread_id": "newest"},
                                             "callbacks": [handler]})
    late, in_time = cap.trees()
    assert late.span.parent_span_id is None and not raw(cap, late).links
    assert late.attributes[sc.RUN_RESUMED] is True
    assert sc.RUN_PAUSED_SECONDS not in late.attributes
    assert in_time.span.parent_span_id is not None  # under its paused root (not captured)
    assert len(raw(cap, in_time).links) == 1
    assert len(points) == 1  # the finished story was forgotten; "newer" still waits


def test_the_record_survives_a_new_handler_and_a_new_store_connection(
        cap: SpanCapture, spanguard_home: Any) -> None:
    """Resumed hours later by another process: the record is in the local store's
    SQLite file, not in the handler or the connection that wrote it."""
    import spanguard
    from spanguard import config as sg_config

    checkpointer = InMemorySaver()
    graph = interrupting_graph(checkpointer)
    spanguard.configure(home=spanguard_home)
    try:
        handler = handler_for(cap)
        config: Any = {"configurable": {"thread_id": "durable-1"}, "callbacks": [handler]}
        graph.invoke(INPUT, config)
    finally:
        sg_config.current().shutdown()
    sg_config._current = None
    spanguard.configure(home=spanguard_home)  # a fresh handle: a new store connection
    try:
        other = handler_for(cap)
        graph.invoke(Command(resume="ok"), {"configurable": {"thread_id": "durable-1"},
                                           "callbacks": [other]})
    finally:
        sg_config.current().shutdown()
    story = cap.tree()
    assert [n.attributes[sc.RUN_STATUS] for n in (story, *agents_under(story))] == [
        "paused", "ok"]


def test_many_threads_pause_and_resume_concurrently_each_in_its_own_story(
        cap: SpanCapture) -> None:
    graph = interrupting_graph()
    handler = handler_for(cap)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def story(index: int) -> None:
        config: Any = {"configurable": {"thread_id": f"c-{index}"}, "callbacks": [handler],
                       "metadata": {"user_id": f"user-{index}"}}
        try:
            barrier.wait()
            graph.invoke(INPUT, config)
            graph.invoke(Command(resume=f"answer {index}"), config)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=story, args=(i,)) for i in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    stories = cap.trees()
    assert len(stories) == 16
    for root in stories:
        [resumed] = agents_under(root)
        assert resumed.attributes[sc.USER_HASH] == root.attributes[sc.USER_HASH]
        assert (root.attributes[sc.RUN_STATUS], resumed.attributes[sc.RUN_STATUS]) == (
            "paused", "ok")


async def test_async_pause_and_resume_concurrently(cap: SpanCapture) -> None:
    graph = interrupting_graph()
    handler = handler_for(cap)

    async def story(index: int) -> None:
        config: Any = {"configurable": {"thread_id": f"a-{index}"}, "callbacks": [handler]}
        await graph.ainvoke(INPUT, config)
        await graph.ainvoke(Command(resume="ok"), config)

    await asyncio.gather(*(story(i) for i in range(20)))
    stories = cap.trees()
    assert len(stories) == 20
    assert all(len(agents_under(root)) == 1 for root in stories)


# --- early stops and cancellation -------------------------------------------------


def long_graph() -> Any:
    return react_graph(ScriptedChatModel(tool_steps=4), [add])


def assert_cancelled(cap: SpanCapture) -> SpanNode:
    root = cap.tree()
    assert root.attributes[sc.RUN_STATUS] == "cancelled"
    assert_no_errors(root)
    return root


def test_breaking_out_of_stream_ends_the_run_cancelled(cap: SpanCapture) -> None:
    for index, _ in enumerate(long_graph().stream(INPUT, {"callbacks": [handler_for(cap)]})):
        if index == 1:
            break
    root = assert_cancelled(cap)
    assert root.find("execute_tool add").span.status == "UNSET"  # finished steps stay ok


async def test_breaking_out_of_astream_ends_the_run_cancelled(cap: SpanCapture) -> None:
    stream = long_graph().astream(INPUT, {"callbacks": [handler_for(cap)]})
    async for _ in stream:
        break
    await stream.aclose()
    assert_cancelled(cap)


async def test_stopping_astream_events_early_ends_the_run_cancelled(cap: SpanCapture) -> None:
    events = long_graph().astream_events(INPUT, {"callbacks": [handler_for(cap)]},
                                         version="v2")
    seen = 0
    async for _ in events:
        seen += 1
        if seen == 12:
            break
    await events.aclose()
    assert_cancelled(cap)


class SlowModel(ScriptedChatModel):
    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> Any:
        await asyncio.sleep(5)
        return self._generate(messages, stop, None, **kwargs)


async def test_wait_for_timeout_cancels_every_open_span(cap: SpanCapture) -> None:
    graph = react_graph(SlowModel(tool_steps=1), [add])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(graph.ainvoke(INPUT, {"callbacks": [handler_for(cap)]}), 0.2)
    root = assert_cancelled(cap)
    chat = root.find("chat gpt-4o-mini")  # in flight when the task was cancelled
    assert chat.attributes[sc.RUN_STATUS] == "cancelled"
    assert sc.ABANDONED not in chat.attributes


def test_a_failing_run_is_still_an_error(cap: SpanCapture) -> None:
    def boom(state: MessagesState) -> dict[str, Any]:
        raise ValueError("broken node")

    builder = StateGraph(MessagesState)
    builder.add_node("boom", boom)
    builder.add_edge(START, "boom")
    with pytest.raises(ValueError):
        builder.compile().invoke(INPUT, {"callbacks": [handler_for(cap)]})
    root = cap.tree()
    assert root.attributes[sc.RUN_STATUS] == "error" and root.span.status == "ERROR"


# --- the same handler twice ---------------------------------------------------------


def test_the_same_handler_twice_on_one_run_traces_it_once(cap: SpanCapture) -> None:
    handler = handler_for(cap)
    graph = react_graph(ScriptedChatModel(tool_steps=2), [add])
    graph.invoke(INPUT, {"callbacks": [handler]})
    once = cap.tree().shape()
    cap.clear()
    graph.with_config(callbacks=[handler]).invoke(INPUT, {"callbacks": [handler]})
    assert cap.tree().shape() == once
    assert handler.telemetry_errors == 0
    assert len(handler._tree) == 0  # nothing left open in the handler either


def test_a_streamed_model_with_the_handler_twice_counts_its_usage_once(
        cap: SpanCapture) -> None:
    handler = handler_for(cap)
    model = ScriptedChatModel(tool_steps=0)
    list(model.stream("hi", {"callbacks": [handler]}))
    once = cap.tree().attributes
    cap.clear()
    list(model.with_config(callbacks=[handler]).stream("hi", {"callbacks": [handler]}))
    twice = cap.tree().attributes
    assert twice[sc.GEN_AI_USAGE_INPUT_TOKENS] == once[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert twice[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == once[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5


async def test_the_same_handler_twice_on_concurrent_async_runs(cap: SpanCapture) -> None:
    handler = handler_for(cap)
    graph = react_graph(ScriptedChatModel(tool_steps=1), [add]).with_config(
        callbacks=[handler])
    await asyncio.gather(*(graph.ainvoke(INPUT, {"callbacks": [handler]}) for _ in range(30)))
    roots = cap.trees()
    assert len(roots) == 30
    assert len({root.shape().__repr__() for root in roots}) == 1


# --- agents inside agents -----------------------------------------------------------


def test_an_agent_graph_used_as_a_node_is_an_agent_span(cap: SpanCapture) -> None:
    researcher = create_agent(ScriptedChatModel(tool_steps=1), [add], name="researcher")
    builder = StateGraph(MessagesState)
    builder.add_node("research", researcher)
    builder.add_edge(START, "research")
    builder.compile(name="supervisor").invoke(INPUT, {"callbacks": [handler_for(cap)]})
    root = cap.tree()
    assert root.shape() == ("invoke_agent supervisor", [
        ("research", [("invoke_agent researcher", [
            ("model", [("chat gpt-4o-mini", [])]),
            ("tools", [("execute_tool add", [])]),
            ("model", [("chat gpt-4o-mini", [])]),
        ])]),
    ])
    sub = root.find("invoke_agent researcher")
    assert sub.kind == "AGENT" and sub.attributes[sc.GEN_AI_AGENT_NAME] == "researcher"
    assert sc.RUN_STATUS not in sub.attributes  # the run's status is the root's


def test_an_agent_called_from_a_tool_is_an_agent_span_under_the_tool(
        cap: SpanCapture) -> None:
    researcher = create_agent(ScriptedChatModel(tool_steps=0), [], name="researcher")

    @tool
    def ask_researcher(a: int, b: int) -> str:
        """Ask the research agent."""
        return str(researcher.invoke({"messages": [HumanMessage(f"{a}+{b}?")]})[
            "messages"][-1].content)

    boss = create_agent(ScriptedChatModel(tool_names=["ask_researcher"], tool_steps=1),
                        [ask_researcher], name="boss")
    boss.invoke(INPUT, {"callbacks": [handler_for(cap)]})
    root = cap.tree()
    assert root.name == "invoke_agent boss"
    call = root.find("execute_tool ask_researcher")
    assert [child.shape() for child in call.children] == [
        ("invoke_agent researcher", [("model", [("chat gpt-4o-mini", [])])])]


def test_an_unnamed_agent_graph_inside_a_graph_is_an_agent_span(cap: SpanCapture) -> None:
    helper = create_agent(ScriptedChatModel(tool_steps=0), [])
    builder = StateGraph(MessagesState)
    builder.add_node("delegate", helper)
    builder.add_edge(START, "delegate")
    builder.compile().invoke(INPUT, {"callbacks": [handler_for(cap)]})
    assert cap.tree().find("delegate").children[0].name == "invoke_agent LangGraph"


def test_an_interrupt_inside_a_sub_agent_pauses_the_whole_run(cap: SpanCapture) -> None:
    inner = interrupting_graph().with_config(metadata={"lc_agent_name": "shipper"})
    builder = StateGraph(MessagesState)
    builder.add_node("ship", inner)
    builder.add_edge(START, "ship")
    outer = builder.compile(checkpointer=InMemorySaver(), name="boss")
    config: Any = {"configurable": {"thread_id": "nested-1"}, "callbacks": [handler_for(cap)]}
    outer.invoke(INPUT, config)
    outer.invoke(Command(resume="go"), config)
    story = cap.tree()
    assert story.find("invoke_agent shipper").kind == "AGENT"
    [resumed] = agents_under(story)
    assert (story.attributes[sc.RUN_STATUS], resumed.attributes[sc.RUN_STATUS]) == (
        "paused", "ok")


def test_only_the_agent_graphs_own_run_is_an_agent_span(
        cap: SpanCapture) -> None:
    # Inside an agent graph every run carries the agent's name: only its own run is the
    # agent; nodes named otherwise stay chains.
    create_agent(ScriptedChatModel(tool_steps=1), [add], name="calc").invoke(
        INPUT, {"callbacks": [handler_for(cap)]})
    root = cap.tree()
    assert [n.name for n in root.walk() if n.kind == "AGENT"] == ["invoke_agent calc"]


# --- beside OpenInference's LangChain instrumentor ----------------------------------


@pytest.mark.parametrize("order", ["openinference first", "spanguard first"])
def test_trees_stay_separate_beside_openinference_in_either_order(
        cap: SpanCapture, order: str) -> None:
    from openinference.instrumentation.langchain import LangChainInstrumentor

    from spanguard.testing import capture

    peer = capture()
    instrumentor = LangChainInstrumentor()
    graph = react_graph(ScriptedChatModel(tool_steps=1), [add])
    try:
        if order == "openinference first":
            instrumentor.instrument(tracer_provider=peer.tracer_provider)
        handler = handler_for(cap)
        if order == "spanguard first":
            instrumentor.instrument(tracer_provider=peer.tracer_provider)
        app = cap.tracer_provider.get_tracer("app")
        with app.start_as_current_span("request"):
            graph.invoke(INPUT, {"callbacks": [handler]})
    finally:
        instrumentor.uninstrument()
    ours = {s.span_id for s in cap.spans() if s.name != "request"}
    theirs = {s.span_id for s in peer.spans()}
    assert theirs, "OpenInference traced too"
    assert not [s.name for s in cap.spans() if s.parent_span_id in theirs]
    assert not [s.name for s in peer.spans() if s.parent_span_id in ours]
    root = cap.tree()
    assert [child.name for child in root.children] == ["invoke_agent LangGraph"]
    assert not peer.unended()
