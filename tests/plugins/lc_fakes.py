"""Deterministic LangChain parts for the plugin tests: a scripted chat model and graphs.

The model is stateless (its answer depends only on the conversation so far), so
one instance serves hundreds of concurrent runs and every run gets the same tree.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import BaseTool, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import Field, PrivateAttr


class ScriptedChatModel(BaseChatModel):
    """Calls tools ``tool_steps`` times (round-robin over ``tool_names``), then answers.

    ``parallel`` tool calls are emitted per step. Usage grows with the history,
    like a real agent loop's: input = 10 per message, output = 5 per answer.
    """

    model: str = "gpt-4o-mini"
    tool_names: list[str] = Field(default_factory=lambda: ["add"])
    tool_steps: int = 1
    parallel: int = 1
    temperature: float | None = 0.2
    max_tokens: int | None = 256
    cache_read: int = 0
    reasoning: int = 0
    llm_output_extra: dict[str, Any] | None = None
    calls: int = 0
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "top_p": 0.9}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            self.calls += 1
        done = sum(1 for m in messages if isinstance(m, ToolMessage)) // self.parallel
        usage = {"input_tokens": 10 * len(messages), "output_tokens": 5,
                 "total_tokens": 10 * len(messages) + 5}
        if self.cache_read:
            usage["input_token_details"] = {"cache_read": self.cache_read}
        if self.reasoning:
            usage["output_token_details"] = {"reasoning": self.reasoning}
        if done < self.tool_steps:
            calls = []
            for i in range(self.parallel):
                name = self.tool_names[(done + i) % len(self.tool_names)]
                calls.append({"name": name, "args": {"a": done, "b": i},
                              "id": f"call_{done}_{i}"})
            return AIMessage(content="", tool_calls=calls, usage_metadata=usage,  # type: ignore[arg-type]
                             response_metadata={"model_name": self.model + "-2024-07-18",
                                                "finish_reason": "tool_calls"})
        return AIMessage(content="the answer is 42", usage_metadata=usage,  # type: ignore[arg-type]
                         response_metadata={"model_name": self.model + "-2024-07-18",
                                            "finish_reason": "stop"})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages))],
                          llm_output=self.llm_output_extra)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(self._answer(messages)):
            if run_manager is not None:
                run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(self._answer(messages)):
            if run_manager is not None:
                await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk

    @staticmethod
    def _chunks(message: AIMessage) -> Iterator[ChatGenerationChunk]:
        """Content word by word, usage split over two chunks (summed by the consumer)."""
        text = str(message.content)
        words = text.split(" ") if text else []
        for word in words:
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        usage = message.usage_metadata or {}
        half = {"input_tokens": usage.get("input_tokens", 0), "output_tokens": 2,
                "total_tokens": usage.get("input_tokens", 0) + 2}
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=half,  # type: ignore[arg-type]
            tool_call_chunks=[{"name": c["name"], "args": _json(c["args"]), "id": c["id"],
                               "index": i} for i, c in enumerate(message.tool_calls)]))
        rest = {"input_tokens": 0, "output_tokens": 3, "total_tokens": 3}
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=rest,  # type: ignore[arg-type]
            response_metadata=message.response_metadata, chunk_position="last"))


class ScriptedModel(BaseChatModel):
    """Answers from a fixed list of messages (the last one repeats) and records what it was
    shown, so a test can see how the run reacted to a hold or a refusal."""

    script: list[AIMessage]
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], stop: Any = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        message = self.script[min(len(self.seen) - 1, len(self.script) - 1)]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self

    @property
    def _llm_type(self) -> str:
        return "scripted"


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def explode(a: int, b: int) -> int:
    """Always fails."""
    raise RuntimeError("tool exploded")


def react_graph(model: BaseChatModel, tools: Sequence[BaseTool], *,
                handle_tool_errors: bool = True, name: str | None = None) -> Any:
    """The classic ReAct loop: agent -> (tools -> agent)* -> END."""

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    from langchain_core.runnables import RunnableLambda

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent, name="agent"))
    builder.add_node("tools", ToolNode(list(tools), handle_tool_errors=handle_tool_errors))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(name=name) if name else builder.compile()


__all__ = ["END", "ScriptedChatModel", "add", "explode", "multiply", "react_graph"]
