"""Issue 14 in real LangGraph graphs: the provider never sees more than the limit.

Parallel branches (``Send`` fan-out and parallel edges), ``batch``/``abatch``
inside one node, models that report no usage, and parallel tool calls, sync and
async, over many seeds. ``CountingChatModel`` counts what reaches the provider;
every case asserts it stays within the limit (calls and tokens) and that a run
that fits is never stopped.

Branches of one run are scheduled by LangGraph: some start while others are in
flight (their input is counted from their text), some after others finished
(the loop fit predicts them, with its 5% margin). So a token limit is reached to
within one call's margin, and a run that "fits" leaves that margin free.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph

from spanguard import semconv as sc
from spanguard.guardrails import (
    GuardrailViolation,
    LoopBudget,
    LoopBudgetExceeded,
    Policy,
    ToolLoop,
)
from spanguard.guardrails.estimate import MESSAGE_OVERHEAD, counter_for
from spanguard.guardrails.usage import UsageAccounting, UsageMissing
from spanguard.hashing import canonical_json
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.testing import SpanCapture
from tests.plugins.budget_fakes import (
    MODEL,
    CountingChatModel,
    FanState,
    batch_in_one_node,
    parallel_edges,
    send_fan_out,
    sequential_calls,
    text_of,
)
from tests.plugins.lc_fakes import react_graph

GraphOf = Callable[[BaseChatModel, int, int], Any]
FAN_OUTS: dict[str, GraphOf] = {"send": send_fan_out, "parallel_edges": parallel_edges,
                                "batch": batch_in_one_node}


def handler(cap: SpanCapture, **limits: Any) -> SpanguardCallbackHandler:
    usage = limits.pop("usage", None)
    policy = Policy(loop_budget=LoopBudget(**limits))
    if usage is not None:
        policy = policy.with_parts(usage=usage)
    return SpanguardCallbackHandler(cap.tracer_provider, policy=policy)


def invoke(graph: Any, callbacks: SpanguardCallbackHandler) -> GuardrailViolation | None:
    try:
        graph.invoke({"done": []}, {"callbacks": [callbacks]})
    except GuardrailViolation as refusal:
        return refusal
    return None


async def ainvoke(graph: Any, callbacks: SpanguardCallbackHandler) -> GuardrailViolation | None:
    try:
        await graph.ainvoke({"done": []}, {"callbacks": [callbacks]})
    except GuardrailViolation as refusal:
        return refusal
    return None


@pytest.mark.parametrize("fan_out", FAN_OUTS.values(), ids=FAN_OUTS.keys())
@pytest.mark.parametrize("seed", range(6))
def test_parallel_branches_never_pass_max_model_calls(cap: SpanCapture, fan_out: GraphOf,
                                                      seed: int) -> None:
    rng = random.Random(seed)
    branches, limit = rng.randint(4, 12), rng.randint(1, 3)
    model = CountingChatModel(seed=seed)
    refusal = invoke(fan_out(model, branches, 200), handler(cap, max_model_calls=limit))
    assert model.calls <= limit
    assert isinstance(refusal, LoopBudgetExceeded) and refusal.metric == "model_calls"


@pytest.mark.parametrize("fan_out", FAN_OUTS.values(), ids=FAN_OUTS.keys())
@pytest.mark.parametrize("seed", range(6))
def test_parallel_branches_never_pass_max_input_tokens(cap: SpanCapture, fan_out: GraphOf,
                                                       seed: int) -> None:
    # Issue 14: 8 branches of 1,000-token calls under max_input_tokens = 3,000 spent 7,000.
    model = CountingChatModel(seed=seed)
    branches = random.Random(seed).randint(4, 12)
    refusal = invoke(fan_out(model, branches, 1000), handler(cap, max_input_tokens=3000))
    assert model.tokens <= 3000
    assert model.calls >= 2  # not stopped early either
    assert isinstance(refusal, LoopBudgetExceeded)
    assert "reserved in flight" in str(refusal)


@pytest.mark.parametrize("fan_out", FAN_OUTS.values(), ids=FAN_OUTS.keys())
@pytest.mark.parametrize("seed", range(4))
def test_parallel_branches_that_fit_are_never_stopped(cap: SpanCapture, fan_out: GraphOf,
                                                      seed: int) -> None:
    model = CountingChatModel(seed=seed)
    callbacks = handler(cap, max_input_tokens=3200, max_model_calls=3)
    assert invoke(fan_out(model, 3, 1000), callbacks) is None
    assert (model.calls, model.tokens) == (3, 3000)
    assert not cap.tree().find_all("guardrail loop_budget")  # allow events only


@pytest.mark.parametrize("fan_out", [send_fan_out, batch_in_one_node], ids=["send", "abatch"])
@pytest.mark.parametrize("seed", range(6))
async def test_async_parallel_branches_never_pass_the_limits(cap: SpanCapture,
                                                             fan_out: GraphOf,
                                                             seed: int) -> None:
    model = CountingChatModel(seed=seed)
    refusal = await ainvoke(fan_out(model, 8, 1000),
                            handler(cap, max_input_tokens=3000, max_model_calls=5))
    assert model.tokens <= 3000 and model.calls >= 2
    assert isinstance(refusal, LoopBudgetExceeded) and refusal.metric == "input_tokens"
    calls = CountingChatModel(seed=seed)
    refusal = await ainvoke(fan_out(calls, 8, 100), handler(cap, max_model_calls=5))
    assert calls.calls <= 5 and isinstance(refusal, LoopBudgetExceeded)
    fitting = CountingChatModel(seed=seed)
    assert await ainvoke(fan_out(fitting, 3, 1000),
                         handler(cap, max_input_tokens=3200, max_model_calls=3)) is None
    assert fitting.calls == 3


def test_the_refused_branches_chat_spans_say_what_was_in_flight(cap: SpanCapture) -> None:
    model = CountingChatModel(max_latency=0.05)
    invoke(send_fan_out(model, 8, 1000), handler(cap, max_input_tokens=3000))
    denied = [chat.find("guardrail loop_budget") for chat in cap.tree().find_all(
        "chat gpt-4o-mini") if chat.attributes.get(sc.ERROR_TYPE) == "loop_budget_exceeded"]
    assert denied
    for guard in denied:
        attributes = guard.attributes
        held = attributes[sc.GUARDRAIL_SPEND] + attributes.get(sc.GUARDRAIL_RESERVED, 0)
        assert held + attributes[sc.GUARDRAIL_PREDICTION] > 3000 >= held


# --- models that report no usage -----------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_a_model_without_usage_is_charged_an_estimate_and_stopped(
        cap: SpanCapture, caplog: pytest.LogCaptureFixture, stream: bool) -> None:
    model = CountingChatModel(report_usage=False)
    caplog.set_level(logging.WARNING, logger="spanguard.guardrails")
    refusal = invoke(sequential_calls(model, 10, 500, stream=stream),
                     handler(cap, max_input_tokens=2000))
    assert isinstance(refusal, LoopBudgetExceeded)
    assert model.tokens <= 2000 and model.calls >= 3
    chats = cap.tree().find_all("chat gpt-4o-mini")
    charged = [c for c in chats if c.attributes.get(sc.USAGE_ESTIMATED) is True]
    assert len(charged) == model.calls
    assert charged[0].attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 500  # the provider's count
    warnings = [r for r in caplog.records if "reported no token usage" in r.getMessage()]
    assert len(warnings) == 1  # once per model, not once per call


@pytest.mark.parametrize("seed", range(4))
def test_parallel_branches_of_a_model_without_usage_never_pass_the_limit(
        cap: SpanCapture, seed: int) -> None:
    model = CountingChatModel(report_usage=False, seed=seed)
    refusal = invoke(send_fan_out(model, 8, 1000), handler(cap, max_input_tokens=3000))
    assert isinstance(refusal, LoopBudgetExceeded)
    assert model.tokens <= 3000 and model.calls >= 2


def test_on_missing_usage_refuse_fails_closed(cap: SpanCapture) -> None:
    model = CountingChatModel(report_usage=False)
    refusal = invoke(sequential_calls(model, 10, 500), handler(
        cap, max_input_tokens=100_000, usage=UsageAccounting(on_missing_usage="refuse")))
    assert isinstance(refusal, UsageMissing)
    assert model.calls == 1
    assert "reported no token usage" in str(refusal) and "500 input" in str(refusal)
    chat = cap.tree().find("chat gpt-4o-mini")
    assert chat.attributes[sc.ERROR_TYPE] == "usage_missing"


def test_on_missing_usage_allow_charges_nothing_by_choice(cap: SpanCapture) -> None:
    model = CountingChatModel(report_usage=False)
    refusal = invoke(sequential_calls(model, 10, 500), handler(
        cap, max_input_tokens=2000, usage=UsageAccounting(on_missing_usage="allow")))
    assert refusal is None and model.tokens == 5000  # the budget was told not to count
    assert all(sc.USAGE_ESTIMATED not in chat.attributes
               for chat in cap.tree().find_all("chat gpt-4o-mini"))


# --- parallel tool calls ---------------------------------------------------------------

class ParallelToolCaller(BaseChatModel):
    """Asks for ``calls`` tool calls at once (identical ones with ``same``), then answers."""

    calls: int = 6
    same: bool = False

    @property
    def _llm_type(self) -> str:
        return "parallel-tools"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ParallelToolCaller:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        usage = {"input_tokens": 10, "output_tokens": 1, "total_tokens": 11}
        if any(isinstance(m, ToolMessage) for m in messages):
            message = AIMessage("done", usage_metadata=usage)  # type: ignore[arg-type]
        else:
            message = AIMessage("", usage_metadata=usage,  # type: ignore[arg-type]
                                tool_calls=[{"name": "record", "id": f"c{i}",
                                             "args": {"n": 0 if self.same else i}}
                                            for i in range(self.calls)])
        return ChatResult(generations=[ChatGeneration(message=message)])


def tool_run(cap: SpanCapture, policy: Policy, calls: int, same: bool) -> list[int]:
    ran: list[int] = []
    lock = threading.Lock()

    @tool
    def record(n: int) -> str:
        """Record a number."""
        with lock:
            ran.append(n)
        return "recorded"

    graph = react_graph(ParallelToolCaller(calls=calls, same=same), [record])
    graph.invoke({"messages": [("user", "go")]},
                 {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider, policy=policy)]})
    return ran


@pytest.mark.parametrize("seed", range(5))
def test_a_tool_node_running_calls_at_once_never_passes_max_tool_calls(cap: SpanCapture,
                                                                     seed: int) -> None:
    calls = random.Random(seed).randint(4, 10)
    ran = tool_run(cap, Policy(loop_budget=LoopBudget(max_tool_calls=3)), calls, same=False)
    assert len(ran) == 3
    refused = [t for t in cap.tree().find_all("execute_tool record")
               if t.attributes.get(sc.ERROR_TYPE) == "loop_budget_exceeded"]
    assert len(refused) == calls - 3


@pytest.mark.parametrize("seed", range(5))
def test_identical_tool_calls_at_once_are_caught_by_the_loop_detector(cap: SpanCapture,
                                                                      seed: int) -> None:
    calls = random.Random(seed).randint(3, 8)
    ran = tool_run(cap, Policy(tool_loop=ToolLoop(identical_calls=3)), calls, same=True)
    assert len(ran) == 2  # the 3rd identical call and later are refused, even at once


def test_a_first_call_is_counted_with_its_bound_tools(cap: SpanCapture) -> None:
    schema = {"type": "function", "function": {
        "name": "search", "description": "Search the knowledge base for " + "refunds " * 40,
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}
    model = CountingChatModel()
    bound = model.bind(tools=[schema])  # what bind_tools sends with every request
    prompt = text_of(500)

    def node(state: FanState) -> dict[str, list[str]]:
        return {"done": [str(bound.invoke([HumanMessage(prompt)]).content)]}

    builder = StateGraph(FanState)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    assert invoke(builder.compile(), handler(cap, max_input_tokens=100_000)) is None
    event = cap.tree().find("chat gpt-4o-mini").span.events[0]["attributes"]
    tools = counter_for(MODEL)(canonical_json([schema]))
    assert tools > 40
    assert event[sc.GUARDRAIL_PREDICTION] == 500 + MESSAGE_OVERHEAD + tools
