"""ResilientChatModel: retries and fallbacks as a real chat model, visible per attempt."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from pydantic import BaseModel

from spanguard import semconv as sc
from spanguard.guardrails import (
    AllRoutesFailed,
    Decision,
    Guard,
    GuardrailViolation,
    ModelCall,
    ModelUsage,
    RetryPolicy,
    RunState,
)
from spanguard.plugins.langchain import ResilientChatModel, SpanguardCallbackHandler
from spanguard.plugins.resilient import routing_attributes
from spanguard.testing import SpanCapture, SpanNode
from tests.guardrails.fakes import APIConnectionError, APIStatusError, FakeClock, RateLimitError
from tests.plugins.fakes import ScriptedChatModel


class ModelCalls(Guard):
    """What the budget guards are asked about: attempts only, never the wrapper's run."""

    name = "model_calls"

    def __init__(self) -> None:
        self.before: list[ModelCall] = []
        self.charged: list[tuple[bool, int]] = []

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        self.before.append(call)
        return None

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        self.charged.append((call.is_retry, usage.input_tokens))
        return None


def wrapper(clock: FakeClock, *scripts: tuple[str, list[Any]], **policy: Any) -> tuple[
        ResilientChatModel, list[ScriptedChatModel]]:
    models = [ScriptedChatModel(model_name=name, script=script) for name, script in scripts]
    model = ResilientChatModel(models=models, retry=RetryPolicy(**policy),
                               sleep=clock.sleep, asleep=clock.asleep, clock=clock)
    return model, models


def traced(cap: SpanCapture) -> tuple[dict[str, Any], ModelCalls]:
    """The real callback handler, with a guard that records the budget's view."""
    calls = ModelCalls()
    handler = SpanguardCallbackHandler(cap.tracer_provider, guards=[calls])
    return {"callbacks": [handler]}, calls


def attempts(span: SpanNode) -> list[tuple[str, int, str | None]]:
    return [(c.name, c.attributes[sc.ATTEMPT_NUMBER], c.attributes.get(sc.ERROR_TYPE))
            for c in span.children]


def test_429_twice_then_success_on_the_primary(cap: SpanCapture) -> None:
    clock = FakeClock()
    model, (primary, _) = wrapper(clock, ("gpt-x", [RateLimitError(), RateLimitError(),
                                                    "hello"]), ("claude-y", []))
    assert len(primary.calls) == 0
    config, calls = traced(cap)
    answer = model.invoke("hi", config)
    assert answer.content == "hello"
    assert answer.response_metadata["spanguard"][sc.ROUTING_ATTEMPTS] == 3
    assert len(clock.waits) == 2 and len(primary.calls) == 3

    root = cap.tree()
    assert root.name == "chat gpt-x"
    assert attempts(root) == [("chat gpt-x", 1, "quota_throttled"),
                              ("chat gpt-x", 2, "quota_throttled"), ("chat gpt-x", 3, None)]
    assert root.attributes[sc.ROUTING_REASON] == "normal"
    assert root.attributes[sc.ROUTING_SELECTED] == "gpt-x"
    assert root.children[2].attributes[sc.ATTEMPT_IS_RETRY] is True
    assert root.children[0].attributes[sc.ATTEMPT_IS_RETRY] is False
    assert [c.attributes[sc.ATTEMPT_ROUTE] for c in root.children] == ["gpt-x"] * 3
    # the budget guard sees three model calls, the later two flagged as retries; only
    # the answering attempt reported usage, and it is counted once (not again for the
    # wrapper, whose span carries the routing decision but no usage of its own)
    assert [(c.model, c.is_retry) for c in calls.before] == [
        ("gpt-x", False), ("gpt-x", True), ("gpt-x", True)]
    assert calls.charged == [(True, 10)]
    assert root.children[2].attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in root.attributes
    assert root.attributes[sc.RUN_TOTAL_INPUT_TOKENS] == 10
    assert root.attributes[sc.RUN_MODEL_CALLS] == 1


def test_primary_down_fallback_answers_failover_in_the_trace(cap: SpanCapture) -> None:
    clock = FakeClock()
    model, _ = wrapper(clock, ("gpt-x", [APIStatusError("Service Unavailable", 503)] * 2),
                       ("claude-y", ["from the fallback"]), max_attempts=2)
    config, _ = traced(cap)
    result = model.invoke([HumanMessage("hi")], config)
    assert result.content == "from the fallback"

    root = cap.tree()
    assert attempts(root) == [("chat gpt-x", 1, "server_error"),
                              ("chat gpt-x", 2, "server_error"), ("chat claude-y", 3, None)]
    assert {k: root.attributes[k] for k in (sc.ROUTING_REQUESTED, sc.ROUTING_SELECTED,
                                            sc.ROUTING_REASON, sc.ROUTING_ATTEMPTS)} == {
        sc.ROUTING_REQUESTED: "gpt-x", sc.ROUTING_SELECTED: "claude-y",
        sc.ROUTING_REASON: "failover", sc.ROUTING_ATTEMPTS: 3}
    assert root.children[0].attributes[sc.ATTEMPT_ROUTE] == "gpt-x"
    assert root.children[2].attributes[sc.ATTEMPT_ROUTE] == "claude-y"


def test_llm_output_carries_the_routing_decision() -> None:
    clock = FakeClock()
    model, _ = wrapper(clock, ("gpt-x", [RateLimitError()]), ("claude-y", ["ok"]),
                       max_attempts=1)
    result = model.generate([[HumanMessage("hi")]])
    assert result.generations[0][0].text == "ok"
    flattened = result.flatten()[0]
    attrs = routing_attributes(flattened)
    assert attrs is not None and attrs[sc.ROUTING_REASON] == "quota_throttled"


def test_retry_after_is_honoured_with_a_fake_clock() -> None:
    clock = FakeClock()
    model, _ = wrapper(clock, ("gpt-x", [RateLimitError(headers={"retry-after": "7"}), "ok"]))
    assert model.invoke("hi").content == "ok"
    assert clock.waits == [7.0]


def test_non_transient_400_is_not_retried(cap: SpanCapture) -> None:
    clock = FakeClock()
    bad = APIStatusError("Bad Request: unknown parameter", 400)
    model, (primary, fallback) = wrapper(clock, ("gpt-x", [bad]), ("claude-y", ["never"]))
    config, _ = traced(cap)
    with pytest.raises(APIStatusError) as info:
        model.invoke("hi", config)
    assert info.value is bad
    assert len(primary.calls) == 1 and fallback.calls == [] and clock.waits == []
    root = cap.tree()
    assert root.attributes[sc.ERROR_TYPE] == "bad_request"
    assert root.attributes[sc.ROUTING_ATTEMPTS] == 1
    assert attempts(root) == [("chat gpt-x", 1, "bad_request")]


def test_circuit_opens_then_closes_through_the_wrapper(cap: SpanCapture) -> None:
    clock = FakeClock()
    model, (primary, fallback) = wrapper(
        clock, ("gpt-x", [APIConnectionError("refused")] * 2 + ["primary is back"]),
        ("claude-y", ["fb 1", "fb 2"]), max_attempts=2, circuit_failures=2,
        circuit_cooldown=60)
    assert model.invoke("one").content == "fb 1"

    config, _ = traced(cap)
    assert model.invoke("two", config).content == "fb 2"
    root = cap.tree()
    assert root.attributes[sc.ROUTING_REASON] == "failover"
    assert root.attributes[sc.ROUTING_DETAIL] == "circuit_open"
    assert attempts(root) == [("chat claude-y", 1, None)]  # the primary was not called
    assert len(primary.calls) == 2

    clock.now += 60
    assert model.invoke("three").content == "primary is back"
    assert len(primary.calls) == 3 and len(fallback.calls) == 2


def test_all_routes_failed_is_one_error(cap: SpanCapture) -> None:
    clock = FakeClock()
    model, _ = wrapper(clock, ("gpt-x", [RateLimitError("slow down")] * 2),
                       ("claude-y", [APIStatusError("Overloaded", 529)] * 2), max_attempts=2)
    config, _ = traced(cap)
    with pytest.raises(AllRoutesFailed) as info:
        model.invoke("hi", config)
    message = str(info.value)
    assert "all 2 routes failed" in message
    assert "gpt-x: 2 attempts, last error quota_throttled (RateLimitError: slow down)" in message
    assert "claude-y: 2 attempts, last error provider_overloaded (APIStatusError: Overloaded)" \
        in message
    root = cap.tree()
    assert root.name == "chat gpt-x" and root.span.status == "ERROR"
    assert root.attributes[sc.ERROR_TYPE] == "all_routes_failed"
    assert root.attributes[sc.ROUTING_REASON] == "quota_throttled"
    assert root.attributes[sc.ROUTING_REQUESTED] == "gpt-x"
    assert root.attributes[sc.ROUTING_ATTEMPTS] == 4
    assert sc.ROUTING_SELECTED not in root.attributes
    assert attempts(root) == [("chat gpt-x", 1, "quota_throttled"),
                              ("chat gpt-x", 2, "quota_throttled"),
                              ("chat claude-y", 3, "provider_overloaded"),
                              ("chat claude-y", 4, "provider_overloaded")]


def test_budget_refusal_on_an_attempt_reroutes_with_cost_policy(cap: SpanCapture) -> None:
    class OverBudget(GuardrailViolation):
        error_type = "loop_budget_exceeded"

    class RefuseExpensive(Guard):
        name = "cost_budget"

        def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
            if call.model == "gpt-x":
                return Decision("deny", self.name, "gpt-x would pass the cost budget",
                                error=OverBudget("gpt-x would pass the cost budget"))
            return None

    clock = FakeClock()
    model, (primary, _) = wrapper(clock, ("gpt-x", ["never"]), ("cheap", ["cheap answer"]))
    handler = SpanguardCallbackHandler(cap.tracer_provider, guards=[RefuseExpensive()])
    assert model.invoke("hi", {"callbacks": [handler]}).content == "cheap answer"
    assert primary.calls == []  # refused before the provider was invoked
    root = cap.tree()
    assert root.attributes[sc.ROUTING_REASON] == "cost_policy"
    refused = root.children[0]
    assert refused.attributes[sc.ERROR_TYPE] == "loop_budget_exceeded"
    assert refused.find("guardrail cost_budget").attributes[sc.GUARDRAIL_DECISION] == "deny"


def test_streaming_fails_over_before_the_first_chunk(cap: SpanCapture) -> None:
    clock = FakeClock()
    model, _ = wrapper(clock, ("gpt-x", [APIConnectionError("reset")]),
                       ("claude-y", ["streamed from the fallback"]), max_attempts=1)
    config, _ = traced(cap)
    chunks = list(model.stream("hi", config))
    assert "".join(str(c.content) for c in chunks) == "streamed from the fallback"
    assert len(chunks) >= 4
    final = chunks[0]
    for chunk in chunks[1:]:
        final += chunk
    assert isinstance(final, AIMessageChunk)
    assert final.response_metadata["spanguard"][sc.ROUTING_SELECTED] == "claude-y"
    root = cap.tree()
    assert root.attributes[sc.ROUTING_REASON] == "failover"
    assert attempts(root) == [("chat gpt-x", 1, "connection_error"), ("chat claude-y", 2, None)]


async def test_async_invoke_and_stream_fail_over(cap: SpanCapture) -> None:
    clock = FakeClock()
    model, _ = wrapper(clock, ("gpt-x", [TimeoutError("read timed out")] * 2),
                       ("claude-y", ["async answer", "async stream"]), max_attempts=1)
    config, _ = traced(cap)
    answer = await model.ainvoke("hi", config)
    assert answer.content == "async answer"
    assert answer.response_metadata["spanguard"][sc.ROUTING_REASON] == "failover"
    pieces = [chunk.content async for chunk in model.astream("hi")]
    assert "".join(str(p) for p in pieces) == "async stream"
    root = cap.tree()
    assert attempts(root) == [("chat gpt-x", 1, "timeout"), ("chat claude-y", 2, None)]


def test_with_structured_output_binds_on_every_route() -> None:
    class Weather(BaseModel):
        city: str
        celsius: float

    clock = FakeClock()
    call = AIMessage(content="", tool_calls=[{"name": "Weather", "id": "c1",
                                               "args": {"city": "Oslo", "celsius": 4.5}}])
    model, (primary, fallback) = wrapper(clock, ("gpt-x", [APIStatusError("oops", 500)]),
                                         ("claude-y", [call]), max_attempts=1)
    result = model.with_structured_output(Weather).invoke("weather in Oslo?")
    assert result == Weather(city="Oslo", celsius=4.5)
    assert primary.calls == [{"tools": ["Weather"]}]
    assert fallback.calls == [{"tools": ["Weather"]}]


def test_constructor_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        ResilientChatModel(models=[])
    model = ScriptedChatModel(model_name="m", script=[])
    with pytest.raises(ValueError, match="route names must be unique"):
        ResilientChatModel(models=[model, model], route_names=["a", "a"])
    with pytest.raises(ValueError, match="2 models; give one name per model"):
        ResilientChatModel(models=[model, model], route_names=["a"])
    doubled = ResilientChatModel(models=[model, model])
    assert doubled.route_names == ["m", "m#2"]


def test_tokens_of_failed_attempts_count_toward_the_loop_budget(cap: SpanCapture) -> None:
    """A provider that bills a failed attempt reports usage on the error: it is charged."""
    clock = FakeClock()
    overloaded = APIStatusError("Overloaded", 529,
                                body={"usage": {"input_tokens": 40, "output_tokens": 0}})
    model, _ = wrapper(clock, ("gpt-x", [overloaded, "hello"]))
    config, calls = traced(cap)
    assert model.invoke("hi", config).content == "hello"
    assert calls.charged == [(False, 40), (True, 10)]
    root = cap.tree()
    assert root.attributes[sc.ROUTING_RETRY_TOKENS] == 40
    failed = root.children[0]
    assert failed.attributes[sc.ERROR_TYPE] == "provider_overloaded"
    assert failed.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 40
    assert root.attributes[sc.RUN_TOTAL_INPUT_TOKENS] == 50


def test_a_loop_budget_sees_retries_through_the_wrapper(cap: SpanCapture) -> None:
    """The real LoopBudget: a failed attempt's tokens are charged, its retry is refused."""
    from langchain_core.runnables import RunnableLambda

    from spanguard.guardrails import LoopBudget, LoopBudgetExceeded, Policy

    clock = FakeClock()
    billed = APIStatusError("Overloaded", 529,
                            body={"usage": {"input_tokens": 40, "output_tokens": 0}})
    model, (primary,) = wrapper(clock, ("gpt-x", ["one", billed, "never"]), max_attempts=3)
    handler = SpanguardCallbackHandler(
        cap.tracer_provider, policy=Policy(loop_budget=LoopBudget(max_input_tokens=55)))

    def agent(_: Any) -> str:
        model.invoke("first")
        return str(model.invoke("second").content)

    with pytest.raises(LoopBudgetExceeded) as info:
        RunnableLambda(agent, name="agent").invoke("go", {"callbacks": [handler]})
    assert info.value.spent == 50  # 10 answered + 40 billed on the failed attempt
    assert len(primary.calls) == 2, "the retry was refused before the provider was called"
    root = cap.tree()
    assert root.span.status == "ERROR"
    assert root.attributes[sc.ERROR_TYPE] == "loop_budget_exceeded"
    first, second = [s for s in root.find_all("chat gpt-x")
                     if sc.ROUTING_REQUESTED in s.attributes]
    assert first.attributes[sc.ROUTING_REASON] == "normal"
    assert second.attributes[sc.ROUTING_REASON] == "cost_policy"
    assert second.attributes[sc.ERROR_TYPE] == "loop_budget_exceeded"
    refused = second.children[-1]
    assert (refused.attributes[sc.ATTEMPT_NUMBER], refused.attributes[sc.ATTEMPT_IS_RETRY]) \
        == (2, True)
    assert refused.attributes[sc.ERROR_TYPE] == "loop_budget_exceeded"
    assert refused.find("guardrail loop_budget").attributes[sc.GUARDRAIL_DECISION] == "deny"
