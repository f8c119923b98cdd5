"""Streaming LLM calls: the ``chat`` span stays open until the stream is consumed.

:class:`StreamingLLM` streams its answer word by word and, like the OpenAI
integration with ``stream_options={"include_usage": True}``, reports the model
and token usage only on the last chunk (``raw["usage"]``). LlamaIndex fires the
end event carrying that chunk when the consumer exhausts the stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from spanguard.guardrails.enforcer import Guard
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.steps import Decision, ModelCall, ModelUsage, RunState
from spanguard.plugins import llama_index as sg_llama
from spanguard.pricing import PriceTable
from spanguard.testing import SpanCapture, SpanNode
from tests.plugins._llama_index_fixtures import build_index, instrumented

ANSWER = "Refunds take fourteen days."
OUTPUT_TOKENS = len(ANSWER.split())


class StreamingLLM(CustomLLM):
    """Streams ``ANSWER`` one word per chunk; usage arrives with the last chunk only."""

    model: str = "gpt-4o-mini"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False,
                 **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=ANSWER, raw={"model": self.model,
                                                    "usage": self._usage(prompt)})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> CompletionResponseGen:
        words = ANSWER.split()

        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                text += delta
                last = i == len(words) - 1
                yield CompletionResponse(text=text, delta=delta, raw={
                    "model": self.model,
                    "usage": self._usage(prompt) if last else None})
        return gen()

    @staticmethod
    def _usage(prompt: str) -> dict[str, int]:
        return {"prompt_tokens": len(prompt.split()), "completion_tokens": OUTPUT_TOKENS}


MESSAGES = [ChatMessage(role="user", content="How long do refunds take?")]


def _drain(stream: Iterator[Any]) -> tuple[list[Any], int]:
    """Consume ``stream``; also returns when its last chunk was in the consumer's hand."""
    chunks = []
    consumed = 0
    for chunk in stream:
        chunks.append(chunk)
        consumed = time.time_ns()
    return chunks, consumed


def _assert_metered_chat(chat: SpanNode, consumed_ns: int) -> int:
    attrs = chat.attributes
    assert chat.kind == "LLM"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS
    prompt_tokens = attrs["gen_ai.usage.input_tokens"]
    assert isinstance(prompt_tokens, int) and prompt_tokens > 0
    expected = PriceTable.default().cost("gpt-4o-mini", prompt_tokens, OUTPUT_TOKENS)
    assert expected is not None and attrs["spanguard.cost.usd"] == pytest.approx(expected)
    assert attrs["gen_ai.response.time_to_first_chunk"] >= 0
    assert "spanguard.abandoned" not in attrs
    # The span ended after the last chunk was taken, not when the stream was returned.
    assert chat.span.end_time is not None and chat.span.end_time >= consumed_ns
    return prompt_tokens


def test_sync_stream_chat_records_usage_at_the_end(cap: SpanCapture) -> None:
    llm = StreamingLLM()
    with instrumented(cap, prices=PriceTable.default()):
        stream = llm.stream_chat(MESSAGES)
        assert cap.spans() == []  # nothing ended yet: the stream is still open
        chunks, consumed = _drain(r.delta for r in stream)
    assert "".join(d or "" for d in chunks) == ANSWER
    root = cap.tree()
    assert root.name == "chat gpt-4o-mini" and root.children == []
    prompt_tokens = _assert_metered_chat(root, consumed)
    assert root.attributes["spanguard.run.model_calls"] == 1
    assert root.attributes["spanguard.run.input_tokens"] == prompt_tokens


async def test_async_stream_chat_is_one_span_with_usage(cap: SpanCapture) -> None:
    """CustomLLM's ``astream_chat`` opens ``stream_chat`` only while being iterated."""
    llm = StreamingLLM()
    with instrumented(cap, prices=PriceTable.default()):
        stream = await llm.astream_chat(MESSAGES)
        assert cap.spans() == []
        chunks = []
        async for r in stream:
            chunks.append(r.delta or "")
            consumed = time.time_ns()  # when the last chunk was in hand
    assert "".join(chunks) == ANSWER
    root = cap.tree()  # exactly one tree: the inner stream_chat is folded into it
    assert root.name == "chat gpt-4o-mini" and root.children == []
    _assert_metered_chat(root, consumed)
    assert root.attributes["spanguard.run.model_calls"] == 1


def test_streaming_query_engine_rolls_usage_up_once(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(streaming=True, llm=StreamingLLM())
    with instrumented(cap, prices=PriceTable.default()):
        response = engine.query("How long do refunds take?")
        assert not any(s.name.startswith(("chat", "text_completion")) for s in cap.spans())
        chunks, consumed = _drain(response.response_gen)
    assert "".join(chunks) == ANSWER
    root = cap.tree()
    chat = root.find("text_completion gpt-4o-mini")
    prompt_tokens = _assert_metered_chat(chat, consumed)
    assert prompt_tokens > 10  # the prompt carries the retrieved context
    assert root.find("retrieval VectorIndexRetriever").kind == "RETRIEVER"
    # The run root waited for the stream: usage is on it exactly once.
    attrs = root.attributes
    assert attrs["spanguard.run.model_calls"] == 1
    assert attrs["spanguard.run.input_tokens"] == prompt_tokens
    assert attrs["spanguard.run.output_tokens"] == OUTPUT_TOKENS
    assert attrs["spanguard.run.cost_usd"] == pytest.approx(chat.attributes["spanguard.cost.usd"])
    assert root.span.end_time is not None and root.span.end_time >= chat.span.end_time


async def test_async_streaming_query_engine(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(streaming=True, llm=StreamingLLM())
    with instrumented(cap):
        response = await engine.aquery("How long do refunds take?")
        text = "".join([t async for t in response.async_response_gen()])
    assert text == ANSWER
    root = cap.tree()
    assert len(root.find_all("text_completion gpt-4o-mini")) == 1
    assert root.attributes["spanguard.run.model_calls"] == 1
    assert root.attributes["spanguard.run.output_tokens"] == OUTPUT_TOKENS


def test_stream_closed_early_ends_cancelled_without_usage(cap: SpanCapture) -> None:
    llm = StreamingLLM()
    with instrumented(cap):
        stream = llm.stream_chat(MESSAGES)
        next(stream)
        stream.close()  # the consumer stops early
        chat = cap.tree()
    assert chat.attributes["spanguard.run.status"] == "cancelled"
    assert chat.span.status == "UNSET"
    assert "gen_ai.usage.input_tokens" not in chat.attributes
    assert "error.type" not in chat.attributes and "spanguard.abandoned" not in chat.attributes


def test_unconsumed_stream_is_ended_by_uninstrument(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(streaming=True, llm=StreamingLLM())
    with instrumented(cap):
        response = engine.query("refunds?")
        state = sg_llama._installed.state  # type: ignore[union-attr]
        # The LLM is called only when the answer is consumed: the query and its
        # synthesizer wait for that.
        assert len(state.tree) > 0 and cap.spans()[-1].name == "retrieval VectorIndexRetriever"
    assert len(state.tree) == 0 and not state._streams and not state._lazy
    root = cap.tree()
    assert root.attributes["spanguard.abandoned"]
    assert root.find("CompactAndRefine").attributes["spanguard.abandoned"]
    assert response.response_gen is not None  # never consumed


def test_unconsumed_stream_is_reaped(cap: SpanCapture) -> None:
    llm = StreamingLLM()
    with instrumented(cap):
        state = sg_llama._installed.state  # type: ignore[union-attr]
        state.tree._max_age = 1e-9  # everything open is past its age limit
        llm.stream_chat(MESSAGES)
        assert len(state.tree) > 0
        state.tree._reap()
        assert len(state.tree) == 0
        assert state.tree.reaped >= 1
    assert cap.tree().attributes["spanguard.abandoned"].startswith("reaped")


class _Seen(Guard):
    name = "seen"

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, int, int]] = []

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        return None

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        self.seen.append((call.model, usage.input_tokens, usage.output_tokens))
        return None


def test_policy_sees_the_streamed_usage(cap: SpanCapture) -> None:
    guard = _Seen()
    llm = StreamingLLM()
    with instrumented(cap, policy=Policy(guards=(guard,))):
        stream = llm.stream_chat(MESSAGES)
        assert guard.seen == []  # nothing to report before the stream ends
        for _ in stream:
            pass
    chat = cap.tree().attributes
    assert guard.seen == [("gpt-4o-mini", chat["gen_ai.usage.input_tokens"], OUTPUT_TOKENS)]
