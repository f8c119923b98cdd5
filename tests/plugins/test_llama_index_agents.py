"""LlamaIndex agents and workflows: agent roots, one span per model and tool call, early
stops, streams left to their reader, and the company of another LlamaIndex instrumentor.

Every scenario ends with the capture's ledger check (``tests/conftest.py``): each span
that started has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ReActAgent
from llama_index.core.tools import FunctionTool, QueryEngineTool
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor
from workflows.errors import WorkflowCancelledByUser

from spanguard import semconv as sc
from spanguard.hashing import payload_hash
from spanguard.testing import SpanCapture, SpanNode, capture
from tests.plugins._llama_index_agents import ReActLLM, ToolCallingLLM
from tests.plugins._llama_index_fixtures import build_index, instrumented
from tests.plugins.test_llama_index_stream import ANSWER, StreamingLLM


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def slow_add(a: int, b: int) -> int:
    """Add two integers, slowly."""
    await asyncio.sleep(5)
    return a + b


def adder() -> FunctionTool:
    return FunctionTool.from_defaults(add)


def chats(root: SpanNode) -> list[SpanNode]:
    return [n for n in root.walk() if n.kind == "LLM"]


def assert_no_errors(root: SpanNode) -> None:
    for node in root.walk():
        assert node.span.status != "ERROR", node.name


# --- agents: one span per model call and per tool call ------------------------------


async def test_function_agent_is_an_agent_with_one_span_per_model_and_tool_call(
        cap: SpanCapture) -> None:
    llm = ToolCallingLLM(steps=2)
    agent = FunctionAgent(tools=[adder()], llm=llm, name="calculator")
    with instrumented(cap):
        result = await agent.run("what is 0+1, then 1+1?")
    assert "42" in str(result)
    root = cap.tree()
    assert root.shape() == ("invoke_agent calculator", [
        ("chat gpt-4o-mini", []), ("execute_tool add", []),
        ("chat gpt-4o-mini", []), ("execute_tool add", []),
        ("chat gpt-4o-mini", []),
    ])
    assert root.kind == "AGENT" and root.attributes[sc.GEN_AI_AGENT_NAME] == "calculator"
    assert len(chats(root)) == llm.calls == 3  # no span for _prepare_chat_with_tools
    first, second = root.find_all("execute_tool add")
    assert first.kind == "TOOL"
    assert [first.attributes[sc.GEN_AI_TOOL_CALL_ID],
            second.attributes[sc.GEN_AI_TOOL_CALL_ID]] == ["call_0", "call_1"]
    assert first.attributes[sc.TOOL_ARGS_HASH] == payload_hash({"a": 0, "b": 1})
    assert sc.GEN_AI_TOOL_CALL_ARGUMENTS not in first.attributes  # content is opt-in
    assert root.attributes[sc.RUN_STATUS] == "ok"
    assert root.attributes[sc.RUN_MODEL_CALLS] == 3
    assert root.attributes[sc.RUN_TOTAL_OUTPUT_TOKENS] == 15
    assert_no_errors(root)


async def test_tool_arguments_and_results_are_recorded_only_with_content_capture(
        cap: SpanCapture) -> None:
    agent = FunctionAgent(tools=[adder()], llm=ToolCallingLLM(), name="calculator")
    with instrumented(cap, capture_content=True):
        await agent.run("0+1?")
    call = cap.tree().find("execute_tool add")
    assert call.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"a":0,"b":1}'
    assert call.attributes[sc.GEN_AI_TOOL_CALL_RESULT] == "1"


async def test_react_agent_has_the_same_shape(cap: SpanCapture) -> None:
    llm = ReActLLM(steps=1)
    agent = ReActAgent(tools=[adder()], llm=llm, name="reasoner")
    with instrumented(cap):
        await agent.run("0+1?")
    root = cap.tree()
    assert root.shape() == ("invoke_agent reasoner", [
        ("chat gpt-4o-mini", []), ("execute_tool add", []), ("chat gpt-4o-mini", []),
    ])
    assert len(chats(root)) == llm.calls == 2


async def test_agent_workflow_handoff_keeps_every_call_under_one_root(
        cap: SpanCapture) -> None:
    router = FunctionAgent(name="router", description="routes", can_handoff_to=["calc"],
                           tools=[], llm=ToolCallingLLM(
                               tool="handoff", arguments={"to_agent": "calc", "reason": "math"}))
    calc_llm = ToolCallingLLM(steps=2, arguments={"a": 1, "b": 1})
    calc = FunctionAgent(name="calc", description="adds", tools=[adder()], llm=calc_llm)
    workflow = AgentWorkflow(agents=[router, calc], root_agent="router")
    with instrumented(cap):
        await workflow.run("1+1?")
    root = cap.tree()
    assert root.shape() == ("invoke_agent AgentWorkflow", [
        ("chat gpt-4o-mini", []), ("execute_tool handoff", []),
        ("chat gpt-4o-mini", []), ("execute_tool add", []), ("chat gpt-4o-mini", []),
    ])
    assert len(chats(root)) == 1 + calc_llm.calls


async def test_retrieval_is_under_the_tool_that_made_it(cap: SpanCapture) -> None:
    handbook = QueryEngineTool.from_defaults(
        build_index("handbook").as_query_engine(llm=StreamingLLM()), name="handbook",
        description="the staff handbook")
    agent = FunctionAgent(tools=[handbook], llm=ToolCallingLLM(tool="handbook"),
                          name="researcher")
    with instrumented(cap):
        await agent.run("how long do refunds take?")
    root = cap.trees()[-1]  # the index build's embedding spans come first
    call = root.find("execute_tool handbook")
    assert call.find("retrieval handbook").kind == "RETRIEVER"
    assert [n.name for n in call.walk() if n.kind == "LLM"] == ["text_completion gpt-4o-mini"]
    assert call.find("RetrieverQueryEngine").kind == "CHAIN"


async def test_concurrent_agent_runs_are_separate_trees(cap: SpanCapture) -> None:
    agent = FunctionAgent(tools=[adder()], llm=ToolCallingLLM(), name="calculator")
    with instrumented(cap):
        await asyncio.gather(*(agent.run(f"question {i}") for i in range(20)))
    roots = cap.trees()
    assert len(roots) == 20
    assert {repr(root.shape()) for root in roots} == {repr(("invoke_agent calculator", [
        ("chat gpt-4o-mini", []), ("execute_tool add", []), ("chat gpt-4o-mini", [])]))}


class Echo(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=f"echo {ev.get('text')}")


class Broken(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        raise ValueError("no answer")


async def test_a_workflow_is_an_agent_root_and_its_failure_an_error(cap: SpanCapture) -> None:
    with instrumented(cap):
        assert await Echo().run(text="hi") == "echo hi"
        with pytest.raises(ValueError):
            await Broken().run()
    echo, broken = cap.trees()
    assert echo.name == "invoke_agent Echo" and echo.kind == "AGENT"
    assert echo.attributes[sc.RUN_STATUS] == "ok"
    assert broken.attributes[sc.RUN_STATUS] == "error" and broken.span.status == "ERROR"


# --- early stops and cancellation -------------------------------------------------


async def test_wait_for_timeout_ends_the_agent_cancelled(cap: SpanCapture) -> None:
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(async_fn=slow_add, name="add")],
                          llm=ToolCallingLLM(), name="calculator")
    with instrumented(cap):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(agent.run("0+1?"), 0.3)
        await asyncio.sleep(0.05)
    root = cap.tree()
    assert root.attributes[sc.RUN_STATUS] == "cancelled"
    assert root.find("execute_tool add").attributes[sc.RUN_STATUS] == "cancelled"
    assert_no_errors(root)


async def test_cancelling_a_workflow_run_ends_it_cancelled(cap: SpanCapture) -> None:
    agent = FunctionAgent(tools=[adder()], llm=ToolCallingLLM(steps=5), name="calculator")
    with instrumented(cap):
        handler = agent.run("keep adding")
        async for event in handler.stream_events():
            if type(event).__name__ == "ToolCallResult":
                break  # the client is gone
        await handler.cancel_run()
        with pytest.raises(WorkflowCancelledByUser):
            await handler
    root = cap.tree()
    assert root.attributes[sc.RUN_STATUS] == "cancelled"
    assert_no_errors(root)


async def test_a_slow_model_cut_by_a_timeout_is_cancelled_not_failed(cap: SpanCapture) -> None:
    agent = FunctionAgent(tools=[adder()], llm=ToolCallingLLM(delay=5), name="calculator")
    with instrumented(cap):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(agent.run("0+1?"), 0.3)
        await asyncio.sleep(0.05)
    root = cap.tree()
    assert root.attributes[sc.RUN_STATUS] == "cancelled"
    assert [n.attributes.get(sc.RUN_STATUS) for n in chats(root)] == ["cancelled"]
    assert_no_errors(root)


def test_a_streaming_query_read_halfway_ends_cancelled(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(streaming=True, llm=StreamingLLM())
    with instrumented(cap):
        response = engine.query("How long do refunds take?")
        stream: Iterator[str] = response.response_gen
        next(stream)
        stream.close()  # type: ignore[attr-defined]  # the reader stopped
    root = cap.trees()[-1]
    assert root.attributes[sc.RUN_STATUS] == "cancelled"
    assert root.find("text_completion gpt-4o-mini").attributes[sc.RUN_STATUS] == "cancelled"
    assert_no_errors(root)
    for node in root.walk():
        assert sc.ABANDONED not in node.attributes, node.name


# --- content capture leaves the stream to its reader ------------------------------


def test_capture_never_reads_a_streaming_query_for_its_reader(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(streaming=True, llm=StreamingLLM())
    with instrumented(cap, capture_content=True):
        response = engine.query("How long do refunds take?")
        chunks = list(response.response_gen)
    assert "".join(chunks) == ANSWER and len(chunks) == 4  # every chunk reached the user
    root = cap.trees()[-1]
    assert root.name == "RetrieverQueryEngine"
    assert root.attributes[sc.RUN_STATUS] == "ok"
    assert root.attributes[sc.OI_OUTPUT_VALUE] == ANSWER  # recorded once read
    assert root.attributes[sc.OI_INPUT_VALUE] == "How long do refunds take?"


async def test_capture_never_reads_an_async_streaming_query(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(streaming=True, llm=StreamingLLM())
    with instrumented(cap, capture_content=True):
        response = await engine.aquery("How long do refunds take?")
        text = "".join([t async for t in response.async_response_gen()])
    assert text == ANSWER
    root = cap.trees()[-1]
    assert root.attributes[sc.OI_OUTPUT_VALUE] == ANSWER
    assert root.attributes[sc.RUN_STATUS] == "ok"


# --- beside OpenInference's LlamaIndex instrumentor ---------------------------------


@pytest.fixture
def openinference() -> Iterator[tuple[SpanCapture, LlamaIndexInstrumentor]]:
    peer = capture()
    instrumentor = LlamaIndexInstrumentor()
    yield peer, instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    assert not peer.unended()


def _ids(spans: SpanCapture) -> set[str]:
    return {s.span_id for s in spans.spans()}


@pytest.mark.parametrize("order", ["openinference first", "spanguard first"])
async def test_trees_stay_separate_beside_openinference_in_either_order(
        cap: SpanCapture, openinference: tuple[SpanCapture, LlamaIndexInstrumentor],
        order: str) -> None:
    from spanguard.plugins import llama_index as sg_llama

    peer, instrumentor = openinference
    engine = build_index("handbook").as_query_engine(llm=StreamingLLM())
    agent = FunctionAgent(tools=[adder()], llm=ToolCallingLLM(), name="calculator")
    app = cap.tracer_provider.get_tracer("app")
    if order == "openinference first":
        instrumentor.instrument(tracer_provider=peer.tracer_provider)
    sg_llama.instrument(cap.tracer_provider)
    try:
        if order == "spanguard first":
            instrumentor.instrument(tracer_provider=peer.tracer_provider)
        with app.start_as_current_span("request") as request:
            engine.query("refunds?")
            await agent.run("0+1?")
    finally:
        sg_llama.uninstrument()
    ours = {s.span_id for s in cap.spans() if s.name != "request"}
    theirs = _ids(peer)
    assert peer.spans(), "OpenInference traced too"
    assert not [s.name for s in cap.spans() if s.parent_span_id in theirs]
    assert not [s.name for s in peer.spans() if s.parent_span_id in ours]
    root = cap.tree()  # both runs under the app's span, nothing in between
    assert root.name == "request"
    assert [child.name for child in root.children] == [
        "RetrieverQueryEngine", "invoke_agent calculator"]
    request_id = format(request.get_span_context().span_id, "016x")
    assert all(child.span.parent_span_id == request_id for child in root.children)


def test_openinference_first_and_a_query_inside_a_langgraph_tool(
        cap: SpanCapture, openinference: tuple[SpanCapture, LlamaIndexInstrumentor]) -> None:
    """The tool's span is where the query was called from: spanguard's query root goes
    under it, not under OpenInference's copy of the query."""
    from langchain_core.tools import tool

    from spanguard.plugins import llama_index as sg_llama
    from spanguard.plugins.langchain import SpanguardCallbackHandler
    from tests.plugins.lc_fakes import ScriptedChatModel, react_graph

    peer, instrumentor = openinference
    engine = build_index("handbook").as_query_engine(llm=StreamingLLM())

    @tool
    def lookup(a: int, b: int) -> str:
        """Look something up in the handbook."""
        return str(engine.query("refunds?"))

    instrumentor.instrument(tracer_provider=peer.tracer_provider)
    sg_llama.instrument(cap.tracer_provider)
    try:
        react_graph(ScriptedChatModel(tool_names=["lookup"], tool_steps=1), [lookup]).invoke(
            {"messages": [("user", "refunds?")]},
            {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    finally:
        sg_llama.uninstrument()
    root = cap.tree()
    call = root.find("execute_tool lookup")
    assert [child.name for child in call.children] == ["RetrieverQueryEngine"]
    assert not [s for s in cap.spans() if s.parent_span_id in _ids(peer)]


def test_instrument_puts_spanguard_first_in_the_dispatcher(cap: SpanCapture) -> None:
    from llama_index.core.instrumentation import get_dispatcher

    with instrumented(cap):
        handlers: list[Any] = get_dispatcher().span_handlers
        assert type(handlers[0]).__name__ == "SpanguardSpanHandler"


def test_a_root_under_a_peer_instrumentors_span_starts_under_that_spans_parent(
        cap: SpanCapture) -> None:
    """What spanguard did not see start (an operation begun before instrument(), a task
    that lost LlamaIndex's parent) still never nests under the peer's mirror of it."""
    from opentelemetry import trace

    from spanguard.plugins._llama_index_context import root_context
    from spanguard.plugins._llama_index_handlers import TRACER_NAME

    app = cap.tracer_provider.get_tracer("app")
    peer = cap.tracer_provider.get_tracer("openinference.instrumentation.llama_index")
    with app.start_as_current_span("request") as request:
        assert root_context(TRACER_NAME) is None  # the caller's own span: as it is
        with peer.start_as_current_span("RetrieverQueryEngine.query"):
            context = root_context(TRACER_NAME)
            assert context is not None
            assert trace.get_current_span(context).get_span_context().span_id == \
                request.get_span_context().span_id
    with peer.start_as_current_span("FunctionAgent.run"):  # the peer's span is a root
        context = root_context(TRACER_NAME)
        assert context is not None
        assert not trace.get_current_span(context).get_span_context().is_valid


@pytest.mark.parametrize("capture_content", [True, False])
async def test_an_agent_root_shows_the_question_and_answer_only_with_capture_on(
        cap: SpanCapture, capture_content: bool) -> None:
    """The trace's input and output (Langfuse's trace input/output, trace evaluators)."""
    agent = FunctionAgent(tools=[adder()], llm=ToolCallingLLM(), name="calculator")
    with instrumented(cap, capture_content=capture_content):
        await agent.run("what is 0 + 1?")
    root = cap.trees()[-1]
    assert root.name == "invoke_agent calculator"
    if capture_content:
        assert root.attributes[sc.OI_INPUT_VALUE] == "what is 0 + 1?"
        assert root.attributes[sc.OI_OUTPUT_VALUE] == "the answer is 42"
    else:
        assert sc.OI_INPUT_VALUE not in root.attributes
        assert sc.OI_OUTPUT_VALUE not in root.attributes
