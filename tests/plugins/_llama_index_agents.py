"""Deterministic LLMs for LlamaIndex's workflow agents, offline.

:class:`ToolCallingLLM` is a real ``FunctionCallingLLM`` (the base class of the
OpenAI, Anthropic, ... integrations): it asks for ``tool`` ``steps`` times, then
answers, and reports usage in ``raw["usage"]`` as the OpenAI integration does.
Streaming (which ``FunctionAgent`` always uses) yields the answer word by word,
usage on the last chunk. :class:`ReActLLM` answers in the ReAct text format.
``calls`` counts real model calls, so a test can compare it with the LLM spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection


class ToolCallingLLM(FunctionCallingLLM):
    """Calls ``tool`` with ``arguments`` (default ``{"a": n, "b": 1}``, n the number of
    tool results so far) until the conversation has ``steps`` tool results, then answers."""

    tool: str = "add"
    steps: int = 1
    arguments: dict[str, Any] | None = None
    delay: float = 0.0  # seconds each async call waits first (for timeouts)
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_function_calling_model=True,
                           is_chat_model=True)

    def _prepare_chat_with_tools(self, tools: Sequence[Any], user_msg: Any = None,
                                 chat_history: list[ChatMessage] | None = None,
                                 verbose: bool = False, allow_parallel_tool_calls: bool = False,
                                 **kwargs: Any) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(user_msg if isinstance(user_msg, ChatMessage)
                            else ChatMessage(role=MessageRole.USER, content=str(user_msg)))
        return {"messages": messages, "tools": tools, **kwargs}

    def get_tool_calls_from_response(self, response: ChatResponse,
                                     error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls", [])
        return [ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"])
                for c in calls]

    def reply(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        self.calls += 1
        done = sum(1 for m in messages if m.role == MessageRole.TOOL)
        usage = {"prompt_tokens": 10 * len(messages), "completion_tokens": 5}
        if done < self.steps:
            message = ChatMessage(role=MessageRole.ASSISTANT, content="", additional_kwargs={
                "tool_calls": [{"id": f"call_{done}", "name": self.tool,
                                "args": self.arguments or {"a": done, "b": 1}}]})
        else:
            message = ChatMessage(role=MessageRole.ASSISTANT, content="the answer is 42")
        return ChatResponse(message=message, raw={"model": "gpt-4o-mini", "usage": usage})

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.reply(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        await asyncio.sleep(self.delay)
        return self.reply(messages)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[ChatResponse]:
        response = self.reply(messages)

        def gen() -> Iterator[ChatResponse]:
            yield from _chunks(response)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage],
                           **kwargs: Any) -> AsyncIterator[ChatResponse]:
        await asyncio.sleep(self.delay)
        response = self.reply(messages)

        async def gen() -> AsyncIterator[ChatResponse]:
            for chunk in _chunks(response):
                yield chunk

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError("the agents chat")

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError("the agents chat")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> Iterator[CompletionResponse]:
        raise NotImplementedError("the agents chat")

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> AsyncIterator[CompletionResponse]:
        raise NotImplementedError("the agents chat")


class ReActLLM(ToolCallingLLM):
    """The same script in ReAct's text format (Thought/Action/Action Input/Answer)."""

    def reply(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        self.calls += 1
        observed = self.calls - 1  # one observation per earlier call (one instance per run)
        if observed < self.steps:
            text = (f"Thought: I need a tool.\nAction: {self.tool}\n"
                    f'Action Input: {{"a": {observed}, "b": 1}}')
        else:
            text = "Thought: I can answer without using any more tools.\nAnswer: 42"
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                            raw={"model": "gpt-4o-mini",
                                 "usage": {"prompt_tokens": 7, "completion_tokens": 3}})


def _chunks(response: ChatResponse) -> Iterator[ChatResponse]:
    """Word by word, the tool calls on every chunk, usage on the last (as OpenAI's)."""
    words = (response.message.content or "").split(" ")
    text = ""
    for i, word in enumerate(words):
        text += (" " if i else "") + word
        last = i == len(words) - 1
        yield ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text,
                                additional_kwargs=response.message.additional_kwargs),
            delta=(" " if i else "") + word, raw=response.raw if last else None)
