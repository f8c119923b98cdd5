"""Model spans: request and response facts, usage, cost, streaming."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest
from langchain_core.messages import HumanMessage

from spanguard import semconv as sc
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.pricing import PriceTable
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

INPUT = {"messages": [HumanMessage("what is 1+1?")]}


def test_request_and_response_attributes(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=0, temperature=0.3, max_tokens=100)
    model.invoke("hi", {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    chat = cap.tree()
    assert chat.name == "chat gpt-4o-mini"
    attrs = chat.attributes
    assert chat.kind == "LLM"
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert attrs[sc.OI_LLM_MODEL_NAME] == "gpt-4o-mini"
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "scriptedchatmodel"  # ls_provider
    assert attrs[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.3
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 100
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert attrs[sc.OI_LLM_TOKEN_COUNT_TOTAL] == 15


def test_top_p_from_invocation_params(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=0)
    bound = model.bind(top_p=0.5)
    bound.invoke("hi", {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    assert cap.tree().attributes[sc.GEN_AI_REQUEST_TOP_P] == 0.5


def test_cache_and_reasoning_tokens_and_cost(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=0, cache_read=4, reasoning=2)
    model.invoke([HumanMessage("a"), HumanMessage("b")],
                 {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    attrs = cap.tree().attributes
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 4
    assert attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2
    expected = PriceTable.default().cost("gpt-4o-mini-2024-07-18", 20, 5, 4)
    assert expected is not None and expected > 0
    assert attrs[sc.COST_USD] == pytest.approx(expected)


def test_cost_rolls_up_to_the_root(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=2), [add])
    graph.invoke(INPUT, {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    root = cap.tree()
    chats = root.find_all("chat ")
    assert len(chats) == 3
    total_cost = sum(chat.attributes[sc.COST_USD] for chat in chats)
    total_in = sum(chat.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] for chat in chats)
    assert root.attributes[sc.RUN_TOTAL_COST_USD] == pytest.approx(total_cost)
    assert root.attributes[sc.RUN_TOTAL_INPUT_TOKENS] == total_in == 10 + 30 + 50
    assert root.attributes[sc.RUN_TOTAL_OUTPUT_TOKENS] == 15
    assert root.attributes[sc.RUN_MODEL_CALLS] == 3


def test_unknown_model_cost_is_unknown_not_zero(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=0, model="house-model")
    model.invoke("hi", {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    attrs = cap.tree().attributes
    assert attrs[sc.COST_UNKNOWN] is True
    assert sc.COST_USD not in attrs


def _assert_streamed(chat: Any) -> None:
    attrs = chat.attributes
    assert attrs[sc.GEN_AI_REQUEST_STREAM] is True
    ttft = attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert 0 <= ttft <= (chat.span.end_time - chat.span.start_time) / 1e9
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5, "2 + 3 summed over the chunks"
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]


def test_streaming_model_ttft_and_usage_from_chunks(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=0)
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    text = "".join(str(chunk.content) for chunk in model.stream("hi", {"callbacks": [handler]}))
    assert text.strip() == "the answer is 42"
    _assert_streamed(cap.tree())
    cap.clear()

    async def consume() -> None:
        async for _ in model.astream("hi", {"callbacks": [handler]}):
            pass

    asyncio.run(consume())
    _assert_streamed(cap.tree())


def test_streaming_inside_a_graph(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=1), [add])
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    list(graph.stream(INPUT, {"callbacks": [handler]}, stream_mode="messages"))
    chats = cap.tree().find_all("chat ")
    assert len(chats) == 2
    for chat in chats:
        assert sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in chat.attributes
    assert chats[0].attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["tool_calls"]


def test_non_streaming_call_has_no_ttft(cap: SpanCapture) -> None:
    ScriptedChatModel(tool_steps=0).invoke(
        "hi", {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    assert sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in cap.tree().attributes


def test_routing_fields_only_from_the_retry_wrapper(cap: SpanCapture) -> None:
    """One contract: routing fields come from ResilientChatModel's marked run, never from
    whatever a plain model happens to put under ``llm_output["spanguard"]``."""
    extra = {"spanguard": {sc.ROUTING_SELECTED: "fallback", sc.ROUTING_ATTEMPTS: 2}}
    model = ScriptedChatModel(tool_steps=0, llm_output_extra=extra)
    model.invoke("hi", {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    attrs = cap.tree().attributes
    assert sc.ROUTING_SELECTED not in attrs and sc.ROUTING_ATTEMPTS not in attrs
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10


def test_text_llm_is_traced_too(cap: SpanCapture) -> None:
    from langchain_core.language_models.fake import FakeListLLM

    FakeListLLM(responses=["ok"]).invoke(
        "hi", {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    root = cap.tree()
    assert root.kind == "LLM"
    # A completion model (prompt in, text out): the conventions' text_completion.
    assert root.name == "text_completion"
    assert root.attributes[sc.GEN_AI_OPERATION_NAME] == "text_completion"


def test_usage_from_chunks_when_the_final_message_has_none(cap: SpanCapture) -> None:
    """Some providers report usage only on stream chunks; the handler sums them."""
    from uuid import uuid4

    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk, LLMResult

    handler = SpanguardCallbackHandler(cap.tracer_provider)
    run_id = uuid4()
    handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id,
                                invocation_params={"model": "gpt-4o"})
    for usage in ({"input_tokens": 7, "output_tokens": 1, "total_tokens": 8},
                  {"input_tokens": 0, "output_tokens": 4, "total_tokens": 4,
                   "output_token_details": {"reasoning": 3}}):
        chunk = ChatGenerationChunk(message=AIMessageChunk(content="x",
                                                           usage_metadata=usage))  # type: ignore[arg-type]
        handler.on_llm_new_token("x", chunk=chunk, run_id=run_id)
    final = ChatGenerationChunk(message=AIMessageChunk(content="xx"))
    handler.on_llm_end(LLMResult(generations=[[final]]), run_id=run_id)
    attrs = cap.tree().attributes
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 7
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 3
    assert attrs[sc.COST_USD] == pytest.approx(PriceTable.default().cost("gpt-4o", 7, 5))


def test_request_attributes_are_per_call_on_one_handler(cap: SpanCapture) -> None:
    """The handler caches request attributes by their raw values: a call with other
    parameters, or an unhashable value, must still get its own attributes."""
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    config: Any = {"callbacks": [handler]}
    ScriptedChatModel(tool_steps=0, temperature=0.3, max_tokens=100).invoke("hi", config)
    ScriptedChatModel(tool_steps=0, temperature=0.7, max_tokens=100).invoke("hi", config)
    ScriptedChatModel(tool_steps=0, model="gpt-4o", temperature=0.3,
                      max_tokens=100).invoke("hi", config)
    ScriptedChatModel(tool_steps=0, temperature=0.3, max_tokens=100).invoke("hi", config)
    last = uuid4()
    handler.on_chat_model_start(
        {}, [[HumanMessage("hi")]], run_id=last,
        invocation_params={"model": "gpt-4o-mini", "temperature": [0.1]},
        metadata={"ls_provider": "openai", "ls_temperature": 0.5})
    spans = sorted(cap.spans(), key=lambda s: s.start_time or 0)
    seen = [(s.name, s.attributes.get(sc.GEN_AI_REQUEST_TEMPERATURE),
             s.attributes.get(sc.GEN_AI_PROVIDER_NAME)) for s in spans]
    assert seen == [("chat gpt-4o-mini", 0.3, "scriptedchatmodel"),
                    ("chat gpt-4o-mini", 0.7, "scriptedchatmodel"),
                    ("chat gpt-4o", 0.3, "scriptedchatmodel"),
                    ("chat gpt-4o-mini", 0.3, "scriptedchatmodel")]
    assert handler.telemetry_errors == 0
    # the unhashable temperature bypassed the cache: the span is open, read correctly
    open_entry = next(e for e in handler._tree._entries.values())
    assert open_entry.span.attributes[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.5
    assert open_entry.span.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
    handler.on_llm_error(RuntimeError("test over"), run_id=last)
