"""Retry policy: how often, how long to wait, when to give up; built on tenacity.

``RetryPolicy(max_attempts=3, initial_wait=0.5, max_wait=20.0, deadline=None)``
is a plain value (validated once, here) that the routing engine
(:mod:`spanguard.guardrails.routing`), the LangChain wrapper and the MCP proxy
turn into tenacity objects: ``stop_after_attempt(n) | stop_at_deadline(...)``,
and a wait that honours the provider's ``Retry-After`` hint, otherwise
exponential backoff with jitter, always capped by ``max_wait`` and the time
left before the deadline.

Tool calls are retried only when repeating them is safe: an MCP tool marked
``readOnlyHint`` or ``idempotentHint``. Anything else fails once and says why
(a repeated call could apply its effect twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from spanguard.errors import SpanguardError
from spanguard.guardrails import _parse
from spanguard.guardrails.transient import classify, error_type_name, retry_after

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]
RetryHook = Callable[[int, BaseException, float], None]

# MCP JSON-RPC codes for a connection that closed or a request that timed out.
_MCP_TRANSPORT_CODES = frozenset({-32000, -32001})
_TRANSPORT_NAMES = ("ClosedResource", "BrokenResource", "EndOfStream", "BrokenPipe",
                    "EOFError")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing call is retried (seconds throughout).

    ``max_attempts`` per route; ``deadline`` bounds the whole call across all
    routes (None: no bound); after ``circuit_failures`` consecutive failures a
    route is skipped for ``circuit_cooldown`` seconds (0 disables the breaker).
    """

    max_attempts: int = 3
    initial_wait: float = 0.5
    max_wait: float = 20.0
    deadline: float | None = None
    circuit_failures: int = 5
    circuit_cooldown: float = 30.0

    def __post_init__(self) -> None:
        _validate(self, "RetryPolicy")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str = "[retry]") -> RetryPolicy:
        """Build from a TOML ``[retry]`` table; errors name ``source`` and the key."""
        _parse.check_keys(table, cls.__dataclass_fields__, source)
        return _parse.in_table(source, cls, **table)


def _validate(policy: RetryPolicy, source: str) -> None:
    _parse.integer(policy.max_attempts, "max_attempts", source, minimum=1)
    _parse.seconds(policy.initial_wait, "initial_wait", source)
    _parse.seconds(policy.max_wait, "max_wait", source, minimum=policy.initial_wait)
    if policy.deadline is not None:
        _parse.seconds(policy.deadline, "deadline", source, strict=True)
    _parse.integer(policy.circuit_failures, "circuit_failures", source, minimum=0)
    _parse.seconds(policy.circuit_cooldown, "circuit_cooldown", source)


def parse_retry_table(table: Mapping[str, Any], source: str) -> RetryPolicy:
    """The parser of the ``[retry]`` table of a policy file."""
    return RetryPolicy.from_table(table, source)


# --- tenacity parts --------------------------------------------------------------


class stop_at_deadline(stop_base):
    """Stop when the next sleep would end at or past ``deadline_at`` on ``clock``.

    tenacity's ``stop_before_delay`` with two changes: time comes from the
    injected clock (tests move it by hand), and the deadline is absolute so one
    bound spans every route of a call.
    """

    def __init__(self, deadline_at: float, clock: Clock) -> None:
        self.deadline_at = deadline_at
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep >= self.deadline_at


class stop_when(stop_base):
    """Stop as soon as ``predicate()`` is true (e.g. the route's circuit opened)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate()


class wait_retry_after(wait_base):
    """The provider's ``Retry-After`` if it sent one, else ``backoff``; capped."""

    def __init__(self, backoff: wait_base, max_wait: float,
                 deadline_at: float | None = None, clock: Clock = time.monotonic) -> None:
        self.backoff = backoff
        self.max_wait = max_wait
        self.deadline_at = deadline_at
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        hint = retry_after(error) if error is not None else None
        wait = hint if hint is not None else self.backoff(retry_state)
        wait = min(wait, self.max_wait)
        if self.deadline_at is not None:
            wait = min(wait, max(0.0, self.deadline_at - self.clock()))
        return max(0.0, wait)


def backoff(policy: RetryPolicy) -> wait_base:
    """Exponential from ``initial_wait`` (x2 per retry) plus up to ``initial_wait`` jitter."""
    return (wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
            + wait_random(0, policy.initial_wait))


def _is_transient(error: BaseException) -> bool:
    return classify(error).retryable


def retry_arguments(policy: RetryPolicy, *, deadline_at: float | None = None,
                    clock: Clock = time.monotonic,
                    extra_stop: stop_base | None = None) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying``/``AsyncRetrying`` (minus ``sleep``)."""
    stop: stop_base = stop_after_attempt(policy.max_attempts)
    if deadline_at is not None:
        stop = stop | stop_at_deadline(deadline_at, clock)
    if extra_stop is not None:
        stop = stop | extra_stop
    return {
        "stop": stop,
        "wait": wait_retry_after(backoff(policy), policy.max_wait, deadline_at, clock),
        "retry": retry_if_exception(_is_transient),
        "reraise": True,
    }


# --- tool calls (MCP) --------------------------------------------------------------


class ToolCallNotRetried(SpanguardError):
    """A tool call failed in transit and was deliberately not repeated."""

    error_type = "unknown_action_state"

    def __init__(self, tool: str, why: str, error: BaseException) -> None:
        self.tool = tool
        self.why = why
        super().__init__(
            f"tool {tool!r} failed in transit ({error_type_name(error)}: {error}) and was "
            f"not retried: {why}. The call may or may not have taken effect; check the "
            "state it changes before calling it again, or mark the tool idempotentHint "
            "if repeating it is safe.")


def _hint(annotations: Any, camel: str, snake: str) -> bool:
    if annotations is None:
        return False
    if isinstance(annotations, Mapping):
        value = annotations.get(camel, annotations.get(snake))
    else:
        value = getattr(annotations, snake, getattr(annotations, camel, None))
    return value is True


def tool_retry_allowed(annotations: Any) -> tuple[bool, str]:
    """May a failed call of a tool with these MCP annotations be repeated?

    ``annotations`` is a mapping (``{"readOnlyHint": True}``) or an object such as
    ``mcp.types.ToolAnnotations``. Returns (allowed, reason for the span/error).
    """
    if _hint(annotations, "readOnlyHint", "read_only_hint"):
        return True, "tool is marked readOnlyHint"
    if _hint(annotations, "idempotentHint", "idempotent_hint"):
        return True, "tool is marked idempotentHint"
    if annotations is None:
        return False, "tool has no annotations, so it is treated as non-idempotent"
    return False, "tool is neither readOnlyHint nor idempotentHint, so a repeat could " \
                  "apply its effect twice"


def is_transport_failure(error: BaseException) -> bool:
    """Did the call fail on the way (connection, timeout, upstream restart), not in the tool?

    A tool that ran and reported an error is a result, never a transport failure.
    """
    if classify(error).retryable:
        return True
    code = getattr(error, "code", None)
    if isinstance(code, int) and code in _MCP_TRANSPORT_CODES:
        return True
    names = [cls.__name__ for cls in type(error).__mro__]
    return any(marker in name for name in names for marker in _TRANSPORT_NAMES)


def _tool_retrying_arguments(policy: RetryPolicy, on_retry: RetryHook | None,
                             clock: Clock) -> dict[str, Any]:
    deadline_at = clock() + policy.deadline if policy.deadline is not None else None
    arguments = retry_arguments(policy, deadline_at=deadline_at, clock=clock)
    arguments["retry"] = retry_if_exception(is_transport_failure)
    if on_retry is not None:
        hook = on_retry

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if error is not None:
                hook(state.attempt_number, error, state.upcoming_sleep)

        arguments["before_sleep"] = before_sleep
    return arguments


def retry_tool_call(fn: Callable[[], T], annotations: Any, policy: RetryPolicy, *,
                    tool: str = "tool", sleep: Sleep = time.sleep,
                    clock: Clock = time.monotonic, on_retry: RetryHook | None = None) -> T:
    """Call ``fn``; repeat it on transport failure only if the tool is safe to repeat.

    ``on_retry(attempt, error, wait)`` runs before each wait (record it on the span).
    A non-repeatable tool's transport failure raises :class:`ToolCallNotRetried`.
    """
    allowed, why = tool_retry_allowed(annotations)
    if not allowed:
        try:
            return fn()
        except Exception as exc:
            if is_transport_failure(exc):
                raise ToolCallNotRetried(tool, why, exc) from exc
            raise
    retrying = Retrying(sleep=sleep, **_tool_retrying_arguments(policy, on_retry, clock))
    return retrying(fn)


async def aretry_tool_call(fn: Callable[[], Awaitable[T]], annotations: Any,
                           policy: RetryPolicy, *, tool: str = "tool",
                           sleep: AsyncSleep = asyncio.sleep, clock: Clock = time.monotonic,
                           on_retry: RetryHook | None = None) -> T:
    """Async :func:`retry_tool_call` (what the MCP proxy uses)."""
    allowed, why = tool_retry_allowed(annotations)
    if not allowed:
        try:
            return await fn()
        except Exception as exc:
            if is_transport_failure(exc):
                raise ToolCallNotRetried(tool, why, exc) from exc
            raise
    retrying = AsyncRetrying(sleep=sleep, **_tool_retrying_arguments(policy, on_retry, clock))
    return await retrying(fn)
