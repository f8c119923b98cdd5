"""RetryPolicy validation, the [retry] policy table, the circuit breaker, MCP tool retries."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import ToolAnnotations

from spanguard.errors import ConfigError
from spanguard.guardrails import Policy, RetryPolicy
from spanguard.guardrails.circuit import CircuitBreaker
from spanguard.guardrails.retry import (
    ToolCallNotRetried,
    aretry_tool_call,
    retry_tool_call,
    tool_retry_allowed,
)
from tests.guardrails.fakes import APIStatusError, FakeClock

# --- RetryPolicy -------------------------------------------------------------------


def test_defaults_read_like_the_issue() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_wait, policy.max_wait, policy.deadline) == (
        3, 0.5, 20.0, None)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_attempts": 0}, "RetryPolicy: max_attempts must be an integer >= 1, got 0"),
    ({"max_attempts": True}, "max_attempts must be an integer >= 1, got True"),
    ({"initial_wait": -1}, "initial_wait must be a number of seconds >= 0, got -1"),
    ({"max_wait": 0.1}, "max_wait must be a number of seconds >= 0.5, got 0.1"),
    ({"deadline": 0}, "deadline must be a number of seconds > 0, got 0"),
    ({"deadline": float("nan")}, "deadline must be a number of seconds > 0, got nan"),
    ({"circuit_failures": -1}, "circuit_failures must be an integer >= 0"),
    ({"circuit_cooldown": "30s"}, "circuit_cooldown must be a number of seconds >= 0"),
])
def test_invalid_values_are_refused_at_construction(kwargs: dict[str, object],
                                                    message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_policy_file_retry_table(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("""
name = "prod"
[retry]
max_attempts = 4
initial_wait = 1
max_wait = 30.0
deadline = 60
circuit_failures = 3
circuit_cooldown = 120
""")
    policy = Policy.from_file(path)
    assert policy.retry == RetryPolicy(max_attempts=4, initial_wait=1.0, max_wait=30.0,
                                       deadline=60.0, circuit_failures=3,
                                       circuit_cooldown=120.0)
    assert Policy().retry is None


@pytest.mark.parametrize(("body", "message"), [
    ("[retry]\nmax_attempts = 0\n", "[retry]: max_attempts must be an integer >= 1, got 0"),
    ("[retry]\ndeadline = -5\n", "[retry]: deadline must be a number of seconds > 0"),
    ("[retry]\nmax_wait = \"20s\"\n", "[retry]: max_wait must be a number of seconds"),
    ("[retry]\nattempts = 3\n", "[retry]: unknown key 'attempts' (known keys: "
                                "circuit_cooldown, circuit_failures, deadline"),
    ("retry = 3\n", "[retry] must be a table"),
])
def test_policy_file_errors_name_the_file_and_key(tmp_path: Path, body: str,
                                                  message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        Policy.from_file(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


# --- CircuitBreaker ------------------------------------------------------------------


def test_breaker_opens_after_n_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, cooldown=10.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run of failures
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.acquire()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.acquire()
    assert breaker.retry_in() == 10.0


def test_half_open_lets_exactly_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, cooldown=10.0, clock=clock)
    breaker.record_failure()
    clock.now = 10.0
    assert breaker.state == "half_open"
    assert breaker.acquire()
    assert not breaker.acquire()  # a second caller waits for the trial's outcome
    breaker.record_failure()  # trial failed: open for a fresh cool-down
    assert breaker.state == "open" and breaker.retry_in() == 10.0
    clock.now = 20.0
    assert breaker.acquire()
    breaker.release()  # trial ended without news (cancelled): the next may try
    assert breaker.acquire()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.acquire() and breaker.acquire()


def test_zero_failures_disables_the_breaker() -> None:
    breaker = CircuitBreaker(failures=0, cooldown=10.0, clock=FakeClock())
    for _ in range(100):
        breaker.record_failure()
    assert breaker.state == "closed"


# --- MCP tool retries ----------------------------------------------------------------


@pytest.mark.parametrize(("annotations", "allowed", "why"), [
    ({"readOnlyHint": True}, True, "readOnlyHint"),
    ({"idempotentHint": True, "destructiveHint": True}, True, "idempotentHint"),
    (ToolAnnotations(read_only_hint=True), True, "readOnlyHint"),
    (ToolAnnotations(idempotent_hint=True), True, "idempotentHint"),
    (ToolAnnotations(destructive_hint=True), False, "neither readOnlyHint nor idempotentHint"),
    ({"readOnlyHint": False, "idempotentHint": False}, False, "neither"),
    ({"readOnlyHint": "yes"}, False, "neither"),
    (None, False, "no annotations"),
])
def test_tool_retry_allowed_only_for_read_only_or_idempotent(
        annotations: object, allowed: bool, why: str) -> None:
    ok, reason = tool_retry_allowed(annotations)
    assert ok is allowed
    assert why in reason


class Flaky:
    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_idempotent_tool_is_retried_on_transport_failure_and_upstream_restart() -> None:
    clock = FakeClock()
    seen: list[tuple[int, str]] = []
    call = Flaky(MCPError(code=-32000, message="Connection closed"),
                 ConnectionResetError("upstream restarted"), {"time": "12:00"})
    result = retry_tool_call(call, {"readOnlyHint": True}, RetryPolicy(initial_wait=0.0),
                             tool="get_time", sleep=clock.sleep, clock=clock,
                             on_retry=lambda n, e, w: seen.append((n, type(e).__name__)))
    assert result == {"time": "12:00"}
    assert call.calls == 3
    assert seen == [(1, "MCPError"), (2, "ConnectionResetError")]


def test_idempotent_tool_error_result_is_not_a_transport_failure() -> None:
    clock = FakeClock()
    call = Flaky(ValueError("no such branch"), "never")
    with pytest.raises(ValueError):
        retry_tool_call(call, {"idempotentHint": True}, RetryPolicy(), sleep=clock.sleep,
                        clock=clock)
    assert call.calls == 1


def test_non_idempotent_tool_is_never_retried_and_says_why() -> None:
    clock = FakeClock()
    call = Flaky(MCPError(code=-32001, message="Request 'tools/call' timed out"), "never")
    with pytest.raises(ToolCallNotRetried) as info:
        retry_tool_call(call, {"destructiveHint": True}, RetryPolicy(), tool="git_commit",
                        sleep=clock.sleep, clock=clock)
    assert call.calls == 1 and clock.waits == []
    message = str(info.value)
    assert "tool 'git_commit' failed in transit" in message
    assert "not retried: tool is neither readOnlyHint nor idempotentHint" in message
    assert "may or may not have taken effect" in message
    assert info.value.error_type == "unknown_action_state"
    assert isinstance(info.value.__cause__, MCPError)


def test_non_idempotent_tool_http_400_passes_through_unchanged() -> None:
    bad = APIStatusError("bad arguments", 400)
    with pytest.raises(APIStatusError) as info:
        retry_tool_call(Flaky(bad), None, RetryPolicy())
    assert info.value is bad


async def test_async_tool_retry_gives_up_after_max_attempts() -> None:
    clock = FakeClock()
    outcomes = [ConnectionError("a"), ConnectionError("b"), ConnectionError("c")]
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        raise outcomes.pop(0)

    with pytest.raises(ConnectionError, match="c"):
        await aretry_tool_call(call, ToolAnnotations(read_only_hint=True),
                               RetryPolicy(max_attempts=3, initial_wait=0.25, max_wait=1.0),
                               sleep=clock.asleep, clock=clock)
    assert calls == 3 and len(clock.waits) == 2
