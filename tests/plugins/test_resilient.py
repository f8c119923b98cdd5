"""ResilientChatModel: retries and fallbacks as a real chat model, visible per attempt."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from pydantic import BaseModel

from spanguard import semconv as sc
from spanguard.guardrails import AllRoutesFailed, GuardrailViolation, RetryPolicy
from spanguard.plugins.resilient import ResilientChatModel, routing_attributes
from spanguard.testing import SpanCapture, SpanNode
from tests.guardrails.fakes import APIConnectionError, APIStatusError, FakeClock, RateLimitError
from tests.plugins.fakes import ScriptedChatModel
from tests.plugins.routing_handler import RoutingAwareHandler


def wrapper(clock: FakeClock, *scripts: tuple[str, list[Any]], **policy: Any) -> tuple[
        ResilientChatModel, list[ScriptedChatModel]]:
    models = [ScriptedChatModel(model_name=name, script=script) for name, script in scripts]
    model = ResilientChatModel(models=models, retry=RetryPolicy(**policy),
                               sleep=clock.sleep, asleep=clock.asleep, clock=clock)
    return model, models


def traced(cap: SpanCapture) -> tuple[dict[str, Any], RoutingAwareHandler]:
    handler = RoutingAwareHandler(cap.tracer_provider)
    return {"callbacks": [handler]}, handler


def attempts(span: SpanNode) -> list[tuple[str, int, str | None]]:
    return [(c.name, c.attributes[sc.ATTEMPT_NUMBER], c.attributes.get(sc.ERROR_TYPE))
            for c in span.children]


def test_429_twice_then_success_on_the_primary(cap: SpanCapture) -> None:
    clock = FakeClock()
    model, (primary, _) = wrapper(clock, ("gpt-x", [RateLimitError(), RateLimitError(),
                                                    "hello"]), ("claude-y", []))
    assert len(primary.calls) == 0
    config, handler = traced(cap)
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
    # the budget guard sees three model calls, the later two flagged as retries
    assert [c.is_retry for c in handler.model_calls] == [False, True, True]


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
    assert root.attributes[sc.ROUTING_REASON] == "circuit_open"
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
    assert root.attributes[sc.ERROR_TYPE] == "all_routes_failed"
    assert root.attributes[sc.ROUTING_REASON] == "quota_throttled"
    assert len(root.children) == 4


def test_budget_refusal_on_an_attempt_reroutes_with_budget_policy(cap: SpanCapture) -> None:
    class OverBudget(GuardrailViolation):
        error_type = "loop_budget_exceeded"

    class RefusingHandler(RoutingAwareHandler):
        def on_chat_model_start(self, serialized: dict[str, Any], messages: Any,
                                **kwargs: Any) -> None:
            super().on_chat_model_start(serialized, messages, **kwargs)
            if (kwargs.get("metadata") or {}).get("spanguard_route") == "gpt-x":
                raise OverBudget("gpt-x would pass the cost budget")

    clock = FakeClock()
    model, (primary, _) = wrapper(clock, ("gpt-x", ["never"]), ("cheap", ["cheap answer"]))
    handler = RefusingHandler(cap.tracer_provider)
    assert model.invoke("hi", {"callbacks": [handler]}).content == "cheap answer"
    assert primary.calls == []  # refused before the provider was invoked
    assert cap.tree().attributes[sc.ROUTING_REASON] == "budget_policy"


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
