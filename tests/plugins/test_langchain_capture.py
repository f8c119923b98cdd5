"""Content capture on long runs: linear in run length, within the span's attribute budget."""

from __future__ import annotations

import itertools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import Field

from spanguard import semconv as sc
from spanguard.content_budget import content_budget
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.store import StoredSpan
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

IDENTITY = (sc.OPENINFERENCE_SPAN_KIND, sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_REQUEST_MODEL,
            sc.GEN_AI_PROVIDER_NAME, sc.OI_LLM_MODEL_NAME)


class RecordingModel(ScriptedChatModel):
    """Remembers the input of every call, to compare with what the spans recorded."""

    inputs: list[list[BaseMessage]] = Field(default_factory=list)

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        self.inputs.append(list(messages))
        return super()._answer(messages)


def chats(cap: SpanCapture) -> list[StoredSpan]:
    found = [s for s in cap.spans() if s.attributes.get(sc.GEN_AI_OPERATION_NAME) == "chat"]
    return sorted(found, key=lambda span: span.start_time)


def flattened(span: StoredSpan, side: str) -> list[dict[str, Any]]:
    """The OpenInference messages of ``side`` (input/output), as role/content/tool fields."""
    prefix = f"llm.{side}_messages."
    messages: dict[int, dict[str, Any]] = {}
    for key, value in span.attributes.items():
        if key.startswith(prefix):
            index, _, field = key[len(prefix):].partition(".")
            messages.setdefault(int(index), {})[field] = value
    return [messages[i] for i in sorted(messages)]


def provider_role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant"}.get(message.type, message.type)


def test_each_chat_span_records_only_the_messages_new_to_its_call(cap: SpanCapture) -> None:
    model = RecordingModel(tool_steps=4)
    graph = react_graph(model, [add])
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)
    graph.invoke({"messages": [SystemMessage("be brief"), HumanMessage("add things")]},
                 {"callbacks": [handler]})
    spans = chats(cap)
    assert len(spans) == len(model.inputs) == 5
    previous: StoredSpan | None = None
    for span, sent in zip(spans, model.inputs, strict=True):
        history = span.attributes.get(sc.CONTENT_HISTORY_MESSAGES, 0)
        new = sent[history:]
        genai = json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES])
        oi = flattened(span, "input")
        assert [m["role"] for m in genai] == [provider_role(m) for m in new]
        assert [m["message.role"] for m in oi] == [provider_role(m) for m in new]
        if previous is None:
            assert history == 0 and sc.CONTENT_HISTORY_SPAN_ID not in span.attributes
        else:
            # Everything the previous call was sent, plus its answer, is history.
            assert history == len(model.inputs[spans.index(previous)]) + 1
            assert span.attributes[sc.CONTENT_HISTORY_SPAN_ID] == previous.span_id
            assert len(new) == 1 and new[0].type == "tool"
        previous = span


def test_the_whole_conversation_is_rebuilt_from_the_run_s_chat_spans(cap: SpanCapture) -> None:
    model = RecordingModel(tool_steps=6)
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)
    react_graph(model, [add]).invoke({"messages": [HumanMessage("go")]},
                                     {"callbacks": [handler]})
    by_id = {span.span_id: span for span in chats(cap)}

    def conversation(span: StoredSpan) -> list[dict[str, Any]]:
        """What this call was sent, from its own span and the spans it references."""
        history = span.attributes.get(sc.CONTENT_HISTORY_MESSAGES, 0)
        earlier: list[dict[str, Any]] = []
        if history:
            before = by_id[span.attributes[sc.CONTENT_HISTORY_SPAN_ID]]
            earlier = (conversation(before)
                       + json.loads(before.attributes[sc.GEN_AI_OUTPUT_MESSAGES]))[:history]
        return earlier + json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES])

    last = chats(cap)[-1]
    rebuilt = conversation(last)
    sent = model.inputs[-1]
    assert [m["role"] for m in rebuilt] == [provider_role(m) for m in sent]
    texts = [part.get("content") or part.get("response") for m in rebuilt for part in m["parts"]
             if part["type"] in ("text", "tool_call_response")]
    assert texts == [str(m.content) for m in sent if m.content]


def test_every_message_of_a_long_run_is_recorded_once(cap: SpanCapture) -> None:
    model = RecordingModel(tool_steps=40)
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)
    react_graph(model, [add]).invoke({"messages": [HumanMessage("go")]},
                                     {"callbacks": [handler], "recursion_limit": 100})
    spans = chats(cap)
    recorded_inputs = sum(len(json.loads(s.attributes[sc.GEN_AI_INPUT_MESSAGES])) for s in spans)
    recorded_outputs = sum(len(json.loads(s.attributes[sc.GEN_AI_OUTPUT_MESSAGES]))
                           for s in spans)
    # The user's message and 40 tool results as inputs, 41 answers as outputs: each once.
    assert (recorded_inputs, recorded_outputs) == (41, 41)
    assert len(model.inputs[-1]) == 1 + 40 * 2


def test_a_200_step_run_keeps_identity_on_every_chat_span_and_logs_no_eviction(
        cap: SpanCapture, caplog: pytest.LogCaptureFixture) -> None:
    model = ScriptedChatModel(tool_steps=200)
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)
    with caplog.at_level(logging.WARNING):
        react_graph(model, [add]).invoke({"messages": [HumanMessage("go")]},
                                         {"callbacks": [handler], "recursion_limit": 500})
    finished = cap.exporter.get_finished_spans()
    spans = [s for s in finished if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == "chat"]
    assert len(spans) == 201
    for span in spans:
        attributes = span.attributes or {}
        assert all(key in attributes for key in IDENTITY), span.name
        assert span.dropped_attributes == 0
    assert sum(s.dropped_attributes for s in finished) == 0
    assert [r for r in caplog.records if r.name.startswith("opentelemetry")] == []


def test_content_over_the_budget_is_dropped_first_counted_and_marked(
        cap: SpanCapture, caplog: pytest.LogCaptureFixture) -> None:
    # 30 parallel tool calls: their 90+ flattened keys cannot all fit in one span.
    model = ScriptedChatModel(tool_steps=2, parallel=30)
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)
    with caplog.at_level(logging.WARNING):
        react_graph(model, [add]).invoke(
            {"messages": [HumanMessage("go")]},
            {"callbacks": [handler], "metadata": {"user_id": "alice", "tenant_id": "acme",
                                                   "thread_id": "t-1"}})
    finished = [s for s in cap.exporter.get_finished_spans()
                if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == "chat"]
    truncated = [s for s in finished if (s.attributes or {}).get(sc.CONTENT_TRUNCATED)]
    assert truncated, "a 30-tool-call step must exceed the content budget"
    budget = content_budget()
    for span in finished:
        attributes = span.attributes or {}
        assert span.dropped_attributes == 0 and len(attributes) <= 128
        assert all(key in attributes for key in IDENTITY)
        assert attributes[sc.SESSION_ID]  # run identity survives too
        flat = [k for k in attributes if k.startswith(("llm.input_messages.",
                                                      "llm.output_messages."))]
        assert len(flat) <= budget.inputs + budget.outputs
    for span in truncated:
        attributes = span.attributes or {}
        assert attributes[sc.CONTENT_DROPPED_ATTRIBUTES] > 0
        # The GenAI JSON still holds every new message: 30 tool calls or 30 tool results.
        genai = [*json.loads(str(attributes.get(sc.GEN_AI_INPUT_MESSAGES, "[]"))),
                 *json.loads(str(attributes[sc.GEN_AI_OUTPUT_MESSAGES]))]
        assert sum(len(m["parts"]) for m in genai) >= 30
    assert [r for r in caplog.records if r.name.startswith("opentelemetry")] == []


def test_copies_of_the_history_are_matched_by_value(cap: SpanCapture) -> None:
    model = RecordingModel(tool_steps=3)

    def agent(state: MessagesState) -> dict[str, Any]:
        # A node that hands the model copies (as a checkpointer's reload would).
        return {"messages": [model.invoke([m.model_copy() for m in state["messages"]])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([add]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)
    builder.compile().invoke({"messages": [HumanMessage("go")]}, {"callbacks": [handler]})
    spans = chats(cap)
    assert len(spans) == 4
    for before, span in itertools.pairwise(spans):
        assert span.attributes[sc.CONTENT_HISTORY_SPAN_ID] == before.span_id
        assert [m["role"] for m in json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES])] == [
            "tool"]


def test_a_run_on_a_checkpointed_thread_records_the_stored_history_once(
        cap: SpanCapture) -> None:
    model = RecordingModel(tool_steps=2)
    graph = react_graph(model, [add]).builder.compile(checkpointer=InMemorySaver())
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)
    config: Any = {"callbacks": [handler], "configurable": {"thread_id": "t-1"}}
    graph.invoke({"messages": [HumanMessage("first question")]}, config)
    cap.clear()
    model.inputs.clear()
    model.tool_steps = 4  # the second question takes two more tool steps
    graph.invoke({"messages": [HumanMessage("second question")]}, config)
    spans = chats(cap)
    assert len(spans) == 3
    # A new run: its first call records the stored conversation (copies) once ...
    assert sc.CONTENT_HISTORY_MESSAGES not in spans[0].attributes
    assert len(json.loads(spans[0].attributes[sc.GEN_AI_INPUT_MESSAGES])) == len(
        model.inputs[0]) == 7
    # ... and every later call only its new tool result.
    for before, span in itertools.pairwise(spans):
        assert span.attributes[sc.CONTENT_HISTORY_SPAN_ID] == before.span_id
        assert len(json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES])) == 1


def test_concurrent_runs_reference_only_their_own_spans(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=3), [add])
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)

    def run(i: int) -> None:
        graph.invoke({"messages": [HumanMessage(f"run {i}")]}, {"callbacks": [handler]})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(40)))
    spans = chats(cap)
    by_id = {span.span_id: span for span in spans}
    assert len(spans) == 40 * 4
    for span in spans:
        referenced = span.attributes.get(sc.CONTENT_HISTORY_SPAN_ID)
        if referenced is None:
            assert json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES])[0]["role"] == "user"
            continue
        assert by_id[referenced].trace_id == span.trace_id
    assert handler.telemetry_errors == 0


def test_capture_off_records_no_content_and_no_references(cap: SpanCapture) -> None:
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    react_graph(ScriptedChatModel(tool_steps=2), [add]).invoke(
        {"messages": [HumanMessage("secret")]}, {"callbacks": [handler]})
    for span in chats(cap):
        assert not any(key.startswith(("spanguard.content.", "llm.input_messages",
                                       "gen_ai.input")) for key in span.attributes)


@pytest.mark.parametrize("capture_content", [True, False])
def test_the_root_shows_the_runs_question_and_answer_only_with_capture_on(
        cap: SpanCapture, capture_content: bool) -> None:
    """With capture on, the run's root carries its input and answer (Langfuse's trace
    input/output and trace-level evaluators read them there); off, no text at all."""
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=capture_content)
    react_graph(ScriptedChatModel(tool_steps=1), [add]).invoke(
        {"messages": [HumanMessage("what is 1 + 2?")]}, {"callbacks": [handler]})
    root = cap.tree().attributes
    if capture_content:
        assert root[sc.OI_INPUT_VALUE] == "what is 1 + 2?"
        assert root[sc.OI_OUTPUT_VALUE] == "the answer is 42"
    else:
        assert sc.OI_INPUT_VALUE not in root and sc.OI_OUTPUT_VALUE not in root
