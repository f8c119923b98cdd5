"""The router: retries with backoff, Retry-After, deadline, failover, circuit, one error."""

from __future__ import annotations

from typing import ClassVar

import pytest

from spanguard import semconv as sc
from spanguard.guardrails import AllRoutesFailed, RetryPolicy
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.routing import Attempt, Router, error_routing_attributes
from tests.guardrails.fakes import APIConnectionError, APIStatusError, FakeClock, RateLimitError


class Script:
    """Per route, a list of outcomes: an exception to raise or a value to return."""

    def __init__(self, **routes: list[object]) -> None:
        self.routes = {name: list(outcomes) for name, outcomes in routes.items()}
        self.calls: list[Attempt] = []

    def __call__(self, attempt: Attempt) -> object:
        self.calls.append(attempt)
        outcome = self.routes[attempt.route].pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def with_deprecated_names(attributes: dict[str, object]) -> dict[str, object]:
    """The routing fields under their spanguard.routing.* names and, for one release,
    their 0.x names (seed 004's, unnamespaced) too."""
    out = dict(attributes)
    for key, value in attributes.items():
        if key in sc.DEPRECATED_NAMES:
            out[sc.DEPRECATED_NAMES[key]] = value
        elif key.startswith(sc.ROUTING_BUDGET_STATE + "."):
            out["budget_state" + key[len(sc.ROUTING_BUDGET_STATE):]] = value
    return out


def router(*routes: str, clock: FakeClock, **policy: float) -> Router:
    return Router(routes, RetryPolicy(**policy),  # type: ignore[arg-type]
                  sleep=clock.sleep, asleep=clock.asleep, clock=clock)


def test_429_twice_then_success_on_the_primary() -> None:
    clock = FakeClock()
    script = Script(primary=[RateLimitError(), RateLimitError(), "answer"])
    value, outcome = router("primary", "fallback", clock=clock).run(script)
    assert value == "answer"
    assert [a.route_attempt for a in script.calls] == [1, 2, 3]
    assert [a.is_retry for a in script.calls] == [False, True, True]
    assert outcome.selected_route == "primary"
    assert outcome.reason == "normal"
    assert outcome.attributes() == with_deprecated_names({
        sc.ROUTING_REQUESTED: "primary", sc.ROUTING_SELECTED: "primary",
        sc.ROUTING_REASON: "normal", sc.ROUTING_ATTEMPTS: 3, sc.ROUTING_RETRY_TOKENS: 0,
        sc.ATTEMPT_NUMBER: 3, sc.ROUTING_STATUS: "selected",
        sc.ROUTING_DISCLOSURE_REQUIRED: False,
        f"{sc.ROUTING_BUDGET_STATE}.attempts_remaining": 0.0})
    # exponential backoff from initial_wait=0.5 plus up to 0.5 of jitter, never a real sleep
    assert len(clock.waits) == 2
    assert 0.5 <= clock.waits[0] <= 1.0
    assert 1.0 <= clock.waits[1] <= 1.5


def test_retry_after_is_honoured_and_capped_by_max_wait() -> None:
    clock = FakeClock()
    script = Script(primary=[RateLimitError(headers={"retry-after": "7"}),
                             RateLimitError(headers={"retry-after": "90"}), "ok"])
    router("primary", clock=clock, max_wait=20.0).run(script)
    assert clock.waits == [7.0, 20.0]


def test_retry_after_beyond_the_deadline_moves_on_instead_of_sleeping() -> None:
    clock = FakeClock()
    script = Script(primary=[RateLimitError(headers={"retry-after": "30"})],
                    fallback=["from fallback"])
    value, outcome = router("primary", "fallback", clock=clock, deadline=10.0).run(script)
    assert value == "from fallback"
    assert clock.waits == []
    assert outcome.reason == "quota_throttled"
    assert outcome.selected_route == "fallback"


def test_the_deadline_spans_every_route() -> None:
    clock = FakeClock()
    script = Script(primary=[APIConnectionError("down")] * 3, fallback=["from fallback"])
    r = router("primary", "fallback", clock=clock, deadline=1.5, initial_wait=1.0,
               max_wait=1.0)
    value, outcome = r.run(script)
    # one full wait fits; the second (capped to the 0.5 s left) would reach the
    # deadline, so the primary stops there and the fallback is tried at once.
    assert clock.waits == [1.0]
    assert [a.route for a in script.calls] == ["primary", "primary", "fallback"]
    assert value == "from fallback" and outcome.reason == "failover"


def test_a_route_not_started_before_the_deadline_is_skipped() -> None:
    clock = FakeClock()

    def slow_failure(attempt: Attempt) -> str:
        clock.now += 3.0  # the provider took 3 s to time out
        raise TimeoutError("read timed out")

    with pytest.raises(AllRoutesFailed) as info:
        router("primary", "fallback", clock=clock, deadline=2.0).run(slow_failure)
    assert clock.waits == []
    assert "primary: 1 attempt, last error timeout (TimeoutError: read timed out)" \
        in str(info.value)
    assert "fallback: skipped, the 2s deadline passed before it was tried" in str(info.value)


def test_non_transient_400_is_not_retried_nor_rerouted() -> None:
    clock = FakeClock()
    bad = APIStatusError("Bad Request: messages must not be empty", 400)
    script = Script(primary=[bad], fallback=["never"])
    with pytest.raises(APIStatusError) as info:
        router("primary", "fallback", clock=clock).run(script)
    assert info.value is bad  # the provider's own error type reaches the caller
    assert len(script.calls) == 1 and clock.waits == []
    assert error_routing_attributes(bad) == with_deprecated_names({
        sc.ROUTING_REQUESTED: "primary", sc.ROUTING_SELECTED: "primary",
        sc.ROUTING_REASON: "normal", sc.ROUTING_ATTEMPTS: 1, sc.ROUTING_RETRY_TOKENS: 0,
        sc.ATTEMPT_NUMBER: 1, sc.ROUTING_STATUS: "selected",
        sc.ROUTING_DISCLOSURE_REQUIRED: False,
        f"{sc.ROUTING_BUDGET_STATE}.attempts_remaining": 2.0})


def test_primary_down_fallback_answers_with_failover() -> None:
    clock = FakeClock()
    script = Script(primary=[APIStatusError("Service Unavailable", 503)] * 3,
                    fallback=["from fallback"])
    value, outcome = router("primary", "fallback", clock=clock).run(script)
    assert value == "from fallback"
    assert outcome.reason == "failover"
    assert [(a.route, a.number, a.route_attempt) for a in script.calls] == [
        ("primary", 1, 1), ("primary", 2, 2), ("primary", 3, 3), ("fallback", 4, 1)]
    assert [r.failure.reason if r.failure else None for r in outcome.attempts] == [
        "server_error", "server_error", "server_error", None]


def test_route_failure_fails_over_at_once() -> None:
    clock = FakeClock()
    script = Script(primary=[APIStatusError("invalid api key", 401)], fallback=["ok"])
    _, outcome = router("primary", "fallback", clock=clock).run(script)
    assert len(script.calls) == 2 and clock.waits == []
    assert outcome.reason == "failover"


def test_failed_attempt_tokens_are_retry_tokens() -> None:
    class CutOff(APIStatusError):
        usage_metadata: ClassVar = {"input_tokens": 40, "output_tokens": 5}

    clock = FakeClock()
    script = Script(primary=[CutOff("upstream reset", 502), "ok"])
    _, outcome = router("primary", clock=clock).run(script)
    assert outcome.retry_tokens == 45
    assert outcome.attributes()[sc.ROUTING_RETRY_TOKENS] == 45


def test_all_routes_failed_is_one_error_listing_each_route() -> None:
    clock = FakeClock()
    script = Script(primary=[RateLimitError("slow down")] * 2,
                    fallback=[APIStatusError("invalid api key", 401)])
    with pytest.raises(AllRoutesFailed) as info:
        router("primary", "fallback", clock=clock, max_attempts=2).run(script)
    error = info.value
    message = str(error)
    assert message.startswith("all 2 routes failed; no answer was produced:")
    assert "  - primary: 2 attempts, last error quota_throttled (RateLimitError: slow down)" \
        in message
    assert "  - fallback: 1 attempt, last error auth_error (APIStatusError: invalid api key)" \
        in message
    assert [(r.route, r.attempts, r.error_type) for r in error.routes] == [
        ("primary", 2, "quota_throttled"), ("fallback", 1, "auth_error")]
    assert isinstance(error.__cause__, APIStatusError)
    assert error.attributes[sc.ROUTING_REASON] == "quota_throttled"
    assert sc.ROUTING_SELECTED not in error.attributes
    assert error.attributes[sc.ROUTING_ATTEMPTS] == 3


def test_circuit_opens_skips_the_route_then_half_opens_and_closes() -> None:
    clock = FakeClock()
    r = router("primary", "fallback", clock=clock, max_attempts=2, circuit_failures=2,
               circuit_cooldown=30.0)
    down = Script(primary=[APIConnectionError("refused")] * 2, fallback=["fb1"])
    _, first = r.run(down)
    assert first.reason == "failover"
    assert r.breakers.get("primary").state == "open"

    skipped = Script(primary=[], fallback=["fb2"])
    value, second = r.run(skipped)
    assert value == "fb2" and second.reason == "failover"
    assert second.attributes()[sc.ROUTING_DETAIL] == "circuit_open"
    assert second.status == "degraded" and second.disclosure_required
    assert [a.route for a in skipped.calls] == ["fallback"]

    clock.now += 30.0  # cool-down over: one trial call reaches the primary
    assert r.breakers.get("primary").state == "half_open"
    healed = Script(primary=["back"], fallback=[])
    value, third = r.run(healed)
    assert value == "back" and third.reason == "normal"
    assert r.breakers.get("primary").state == "closed"


def test_circuit_opening_mid_call_stops_retrying_that_route() -> None:
    clock = FakeClock()
    r = router("primary", "fallback", clock=clock, max_attempts=5, circuit_failures=2)
    script = Script(primary=[APIConnectionError("x")] * 5, fallback=["fb"])
    r.run(script)
    assert [a.route for a in script.calls] == ["primary", "primary", "fallback"]


def test_every_circuit_open_fails_fast_with_the_wait_in_the_message() -> None:
    clock = FakeClock()
    r = router("only", clock=clock, max_attempts=1, circuit_failures=1, circuit_cooldown=60)
    with pytest.raises(AllRoutesFailed):
        r.run(Script(only=[APIConnectionError("x")]))
    clock.now += 15
    nothing = Script(only=[])
    with pytest.raises(AllRoutesFailed) as info:
        r.run(nothing)
    assert nothing.calls == []
    assert str(info.value).startswith("the only route failed")
    assert "only: skipped, circuit open after 1 consecutive failures, retry in 45.0s" \
        in str(info.value)
    assert info.value.attributes[sc.ROUTING_REASON] == "failover"
    assert info.value.attributes[sc.ROUTING_DETAIL] == "circuit_open"
    assert info.value.attributes[sc.ROUTING_STATUS] == "failed_closed"


def test_guardrail_refusal_reroutes_with_cost_policy_and_is_blocked() -> None:
    class OverBudget(GuardrailViolation):
        error_type = "loop_budget_exceeded"

    clock = FakeClock()
    script = Script(expensive=[OverBudget("projected 210k > 200k")], cheap=["ok"])
    value, outcome = router("expensive", "cheap", clock=clock).run(script)
    assert value == "ok" and outcome.reason == "cost_policy"
    assert outcome.status == "degraded"

    refused = OverBudget("still over")
    script = Script(expensive=[OverBudget("over")], cheap=[refused])
    with pytest.raises(OverBudget) as info:
        router("expensive", "cheap", clock=clock).run(script)
    assert info.value is refused
    attributes = error_routing_attributes(refused)
    assert attributes is not None
    assert attributes[sc.ROUTING_REASON] == "cost_policy"
    assert attributes[sc.ROUTING_STATUS] == "blocked"
    assert attributes[sc.ROUTING_DISCLOSURE_REQUIRED] is True


def test_cancellation_is_not_a_route_failure() -> None:
    clock = FakeClock()
    r = router("primary", clock=clock, circuit_failures=1)

    def interrupted(attempt: Attempt) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        r.run(interrupted)
    assert r.breakers.get("primary").state == "closed"


async def test_async_run_retries_with_the_async_sleep() -> None:
    clock = FakeClock()
    script = Script(primary=[APIStatusError("Overloaded", 529)] * 2, fallback=["x"])

    async def call(attempt: Attempt) -> object:
        return script(attempt)

    value, outcome = await router("primary", "fallback", clock=clock, max_attempts=2,
                                  initial_wait=0.0).arun(call)
    assert value == "x" and outcome.reason == "failover"
    assert clock.waits == [0.0]
    assert outcome.attempts[0].failure is not None
    assert outcome.attempts[0].failure.reason == "provider_overloaded"


def test_router_rejects_bad_route_lists() -> None:
    with pytest.raises(ValueError, match="at least one route"):
        Router([])
    with pytest.raises(ValueError, match="repeated: \\['a'\\]"):
        Router(["a", "b", "a"])



def test_routing_decision_carries_the_seeds_fields() -> None:
    clock = FakeClock()
    r = Router(["big", "small"], RetryPolicy(max_attempts=2, deadline=60.0),
               sleep=lambda _: None, clock=clock,
               capabilities={"big": ["vision", "tools"], "small": ["tools"]},
               policy_version="2026-11-27")
    value, outcome = r.run(Script(big=[APIConnectionError("x")] * 2, small=["ok"]))
    attributes = outcome.attributes()
    assert value == "ok"
    assert attributes[sc.ROUTING_STATUS] == "degraded"
    assert attributes[sc.ROUTING_REASON] == "failover"
    assert attributes[sc.ROUTING_CAPABILITY_DELTA] == ["lost:vision"]
    assert attributes[sc.ROUTING_DISCLOSURE_REQUIRED] is True
    assert attributes[sc.ROUTING_POLICY_VERSION] == "2026-11-27"
    assert attributes[f"{sc.ROUTING_BUDGET_STATE}.attempts_remaining"] == 1.0
    assert attributes[f"{sc.ROUTING_BUDGET_STATE}.deadline_remaining_s"] == 60.0
    assert attributes["budget_state.deadline_remaining_s"] == 60.0  # 0.x name, deprecated

    _, normal = r.run(Script(big=["fine"], small=[]))
    assert normal.status == "selected" and not normal.disclosure_required
    assert normal.attributes()[sc.ROUTING_CAPABILITY_DELTA] == []


def test_a_deadline_that_passes_before_a_route_is_tried_is_latency_slo() -> None:
    clock = FakeClock()

    def slow(attempt: Attempt) -> str:
        clock.now += 100
        raise APIConnectionError("timeout")

    r = Router(["primary", "fallback"], RetryPolicy(max_attempts=1, deadline=10.0),
               sleep=lambda _: None, clock=clock)
    with pytest.raises(AllRoutesFailed) as info:
        r.run(slow)
    assert info.value.attributes[sc.ROUTING_STATUS] == "failed_closed"
    assert "fallback: skipped, the 10s deadline passed" in str(info.value)
