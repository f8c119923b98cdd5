"""A provider that counts what it is sent, and the graphs that call it in parallel.

``CountingChatModel`` is the provider's side of a budget test: it counts every
request that reaches it and the input tokens of each, the way a chat API does
(4 tokens per message for its role and separators, 3 to prime the reply, the
text with the model's tokenizer: o200k_base for gpt-4o-mini, the one tiktoken
ships), and reports that usage, or none (``report_usage=False``, like several
providers when streaming). ``text_of(n)`` is a user message of exactly ``n``
such tokens. The graphs are the fan-outs issue 14 names: ``Send``, parallel
edges, and ``batch``/``abatch`` inside one node.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from pydantic import PrivateAttr

from spanguard.guardrails.estimate import counter_for, tokenizer_in_use

MODEL = "gpt-4o-mini"
REPLY = "done"


def request_tokens(messages: list[BaseMessage]) -> int:
    """Input tokens of a chat request, counted as the provider counts them."""
    count = counter_for(MODEL)
    return 3 + sum(4 + count(str(message.content)) for message in messages)


@functools.cache
def text_of(tokens: int) -> str:
    """A user message whose request is exactly ``tokens`` input tokens."""
    assert tokenizer_in_use(MODEL) == "o200k_base", "tiktoken's files are on disk here"
    count = counter_for(MODEL)
    words = ["budget"]
    while count(" ".join(words)) + 7 < tokens:
        words.append("budget")
    text = " ".join(words)
    assert count(text) + 7 == tokens
    return text


class CountingChatModel(BaseChatModel):
    """Counts requests and input tokens that reach it; answers after a random delay."""

    report_usage: bool = True
    max_latency: float = 0.01
    seed: int = 0
    calls: int = 0
    tokens: int = 0
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _rng: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "counting"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": MODEL}

    def _receive(self, messages: list[BaseMessage]) -> tuple[AIMessage, float]:
        tokens = request_tokens(messages)
        with self._lock:
            if self._rng is None:
                self._rng = random.Random(self.seed)
            self.calls += 1
            self.tokens += tokens
            delay = self._rng.uniform(0, self.max_latency)
        usage = ({"input_tokens": tokens, "output_tokens": 1, "total_tokens": tokens + 1}
                 if self.report_usage else None)
        return AIMessage(REPLY, usage_metadata=usage,  # type: ignore[arg-type]
                         response_metadata={"model_name": MODEL}), delay

    def _generate(self, messages: list[BaseMessage], stop: Any = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        message, delay = self._receive(messages)
        time.sleep(delay)
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        message, delay = self._receive(messages)
        await asyncio.sleep(delay)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: Any = None,
                run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        message, delay = self._receive(messages)
        time.sleep(delay)
        yield ChatGenerationChunk(message=AIMessageChunk(
            content=str(message.content), usage_metadata=message.usage_metadata))

    async def _astream(self, messages: list[BaseMessage], stop: Any = None,
                       run_manager: Any = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        message, delay = self._receive(messages)
        await asyncio.sleep(delay)
        yield ChatGenerationChunk(message=AIMessageChunk(
            content=str(message.content), usage_metadata=message.usage_metadata))


class FanState(TypedDict):
    done: Annotated[list[str], operator.add]


def send_fan_out(model: BaseChatModel, branches: int, tokens: int) -> Any:
    """START -> ``branches`` x Send("branch") -> END; each branch calls the model once."""
    prompt = text_of(tokens)

    def fan(state: FanState) -> list[Send]:
        return [Send("branch", {"done": []}) for _ in range(branches)]

    def branch(state: FanState) -> dict[str, list[str]]:
        return {"done": [str(model.invoke([HumanMessage(prompt)]).content)]}

    async def abranch(state: FanState) -> dict[str, list[str]]:
        return {"done": [str((await model.ainvoke([HumanMessage(prompt)])).content)]}

    from langchain_core.runnables import RunnableLambda

    builder = StateGraph(FanState)
    builder.add_node("branch", RunnableLambda(branch, afunc=abranch, name="branch"))
    builder.add_conditional_edges(START, fan, ["branch"])
    builder.add_edge("branch", END)
    return builder.compile()


def parallel_edges(model: BaseChatModel, branches: int, tokens: int) -> Any:
    """START -> b0 .. b{n-1} -> END: static parallel edges, one model call each."""
    prompt = text_of(tokens)
    builder = StateGraph(FanState)

    def branch(state: FanState) -> dict[str, list[str]]:
        return {"done": [str(model.invoke([HumanMessage(prompt)]).content)]}

    for index in range(branches):
        builder.add_node(f"b{index}", branch)
        builder.add_edge(START, f"b{index}")
        builder.add_edge(f"b{index}", END)
    return builder.compile()


def batch_in_one_node(model: BaseChatModel, prompts: int, tokens: int) -> Any:
    """One node that sends ``prompts`` requests with ``model.batch`` (``abatch`` async)."""
    prompt = text_of(tokens)
    requests = [[HumanMessage(prompt)] for _ in range(prompts)]

    def node(state: FanState) -> dict[str, list[str]]:
        return {"done": [str(m.content) for m in model.batch(requests)]}

    async def anode(state: FanState) -> dict[str, list[str]]:
        return {"done": [str(m.content) for m in await model.abatch(requests)]}

    from langchain_core.runnables import RunnableLambda

    builder = StateGraph(FanState)
    builder.add_node("node", RunnableLambda(node, afunc=anode, name="node"))
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder.compile()


def sequential_calls(model: BaseChatModel, calls: int, tokens: int,
                     stream: bool = False) -> Any:
    """One node that calls the model ``calls`` times, one after another."""
    prompt = text_of(tokens)

    def node(state: FanState) -> dict[str, list[str]]:
        done = []
        for _ in range(calls):
            if stream:
                done.append("".join(str(c.content) for c in model.stream([HumanMessage(prompt)])))
            else:
                done.append(str(model.invoke([HumanMessage(prompt)]).content))
        return {"done": done}

    builder = StateGraph(FanState)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder.compile()
