"""Chat models that fail in scripted ways, like real provider SDKs do."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    """Each call takes the next outcome: an exception is raised, a message returned.

    Streaming raises before the first chunk (as an HTTP error does) and otherwise
    yields the answer word by word, usage on the last chunk. ``calls`` records the
    tools bound for each call.
    """

    model_name: str
    script: list[Any]
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None,
                   **kwargs: Any) -> Runnable[Any, AIMessage]:
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _next(self, kwargs: dict[str, Any]) -> AIMessage:
        self.calls.append({"tools": [t["function"]["name"] for t in kwargs.get("tools", [])]})
        if not self.script:
            raise AssertionError(f"{self.model_name} was called more often than scripted")
        outcome = self.script.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        message = outcome if isinstance(outcome, AIMessage) else AIMessage(content=outcome)
        return message.model_copy(update={"usage_metadata": {
            "input_tokens": 10, "output_tokens": 3, "total_tokens": 13}})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(kwargs))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        message = self._next(kwargs)
        if message.tool_calls:
            yield ChatGenerationChunk(message=AIMessageChunk(
                content="", usage_metadata=message.usage_metadata,
                tool_call_chunks=[{"name": c["name"], "args": json.dumps(c["args"]),
                                   "id": c["id"], "index": i}
                                  for i, c in enumerate(message.tool_calls)]))
            return
        words = str(message.content).split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield ChatGenerationChunk(message=AIMessageChunk(
                content=word if last else word + " ",
                usage_metadata=message.usage_metadata if last else None))
