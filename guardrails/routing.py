"""One logical call over an ordered list of routes: retry, fail over, say why.

The adapter hands :class:`Router` a function that makes one attempt on one
route; the router decides everything else, framework-free: which route is open
(circuit breakers), how often to retry it and how long to wait (tenacity, per
:class:`~spanguard.guardrails.retry.RetryPolicy`), when to move on, and what to
tell the trace. The result is the routing decision of seed 004 as span
attributes, under the seed's names:

* ``requested_route`` / ``selected_route``;
* ``routing_reason``, the seed's values: ``normal``, ``failover`` (the route
  failed, or its circuit is open: ``spanguard.routing.detail=circuit_open``),
  ``quota_throttled``, ``latency_slo`` (the call's deadline passed before the
  route was tried), ``cost_policy`` (a budget guard refused the route),
  ``safety_policy`` (any other guard refused it);
* ``route_status``: ``selected`` (the requested route answered), ``degraded``
  (a fallback answered), ``blocked`` (guards refused every route),
  ``failed_closed`` (every route failed; nothing was returned);
* ``capability_delta``: the capabilities of the requested route the selected one
  lacks (``lost:vision``), when routes declare capabilities;
* ``user_disclosure_required``: true unless the requested route answered;
* ``policy_version``: the policy's ``version`` when the router has one;
* ``budget_state.*``: what is left of the call's routing budget (attempts on the
  last route tried, seconds to the deadline).

Failure handling follows :func:`~spanguard.guardrails.transient.classify`:
transient failures are retried then failed over, route failures (auth, unknown
model, a guardrail refusing the call) fail over at once, request failures (400,
content policy) are raised unchanged at once. When every route fails the caller
gets one :class:`~spanguard.guardrails.errors.AllRoutesFailed`, unless a
guardrail refused a route: then that refusal is raised (enforcement fails
closed with its own typed error). Every error raised carries the routing
attributes (:func:`error_routing_attributes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from tenacity import AsyncRetrying, Retrying

from spanguard import semconv as sc
from spanguard.errors import ConfigError
from spanguard.guardrails.circuit import CircuitBreaker, CircuitBreakers, Clock
from spanguard.guardrails.errors import AllRoutesFailed, GuardrailViolation, RouteFailure
from spanguard.guardrails.retry import (
    AsyncSleep,
    RetryPolicy,
    Sleep,
    retry_arguments,
    stop_when,
)
from spanguard.guardrails.transient import (
    QUOTA_EXHAUSTED,
    QUOTA_THROTTLED,
    Failure,
    classify,
    error_usage,
)

T = TypeVar("T")
RoutingReason = Literal["normal", "failover", "quota_throttled", "latency_slo", "cost_policy",
                        "safety_policy"]
RouteStatus = Literal["selected", "degraded", "blocked", "failed_closed"]
# Detail kept beside the seed's reason where the seed's word is broader.
DETAIL_CIRCUIT_OPEN = "circuit_open"

# Exceptions raised through the router carry their routing attributes here.
ROUTING_ERROR_ATTR = "spanguard_routing"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try: ``number`` counts across the call, ``route_attempt`` within the route."""

    route: str
    index: int
    number: int
    route_attempt: int

    @property
    def is_retry(self) -> bool:
        """Every attempt after the call's first is a retry (for the loop budget)."""
        return self.number > 1


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt: Attempt
    failure: Failure | None = None
    error: BaseException | None = None
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class RoutingOutcome:
    """The routing decision of one call, as seed 004 names its fields."""

    requested_route: str
    selected_route: str | None
    reason: RoutingReason
    attempts: tuple[AttemptRecord, ...]
    status: RouteStatus = "selected"
    detail: str | None = None
    capability_delta: tuple[str, ...] | None = None
    policy_version: str | None = None
    budget_state: tuple[tuple[str, float], ...] = ()

    @property
    def disclosure_required(self) -> bool:
        """The user must be told: an answer from a fallback, or no answer at all."""
        return self.status != "selected"

    @property
    def retry_tokens(self) -> int:
        """Tokens reported by failed attempts (a lower bound: few providers report any)."""
        return sum(r.input_tokens + r.output_tokens for r in self.attempts if r.error)

    def attributes(self) -> dict[str, Any]:
        """Flat span attributes keyed by :mod:`spanguard.semconv` names."""
        attrs: dict[str, Any] = {
            sc.ROUTING_REQUESTED: self.requested_route,
            sc.ROUTING_REASON: self.reason,
            sc.ROUTING_STATUS: self.status,
            sc.ROUTING_DISCLOSURE_REQUIRED: self.disclosure_required,
            sc.ROUTING_ATTEMPTS: len(self.attempts),
            sc.ROUTING_RETRY_TOKENS: self.retry_tokens,
        }
        if self.detail is not None:
            attrs[sc.ROUTING_DETAIL] = self.detail
        if self.capability_delta is not None:
            attrs[sc.ROUTING_CAPABILITY_DELTA] = list(self.capability_delta)
        if self.policy_version is not None:
            attrs[sc.ROUTING_POLICY_VERSION] = self.policy_version
        for key, value in self.budget_state:
            attrs[f"{sc.ROUTING_BUDGET_STATE}.{key}"] = value
        if self.selected_route is not None:
            attrs[sc.ROUTING_SELECTED] = self.selected_route
        if self.attempts:
            attrs[sc.ATTEMPT_NUMBER] = self.attempts[-1].attempt.number
        for key, value in list(attrs.items()):  # the 0.x names, one more release
            old = sc.DEPRECATED_NAMES.get(key)
            if old is not None:
                attrs[old] = value
            elif key.startswith(_BUDGET_STATE_PREFIX):
                attrs[_DEPRECATED_BUDGET_STATE + key[len(sc.ROUTING_BUDGET_STATE):]] = value
        return attrs


_BUDGET_STATE_PREFIX = sc.ROUTING_BUDGET_STATE + "."
_DEPRECATED_BUDGET_STATE = "budget_state"


def error_routing_attributes(error: BaseException) -> dict[str, Any] | None:
    """The routing attributes a failed routed call left on its error, if any."""
    if isinstance(error, AllRoutesFailed):
        return error.attributes
    attrs = getattr(error, ROUTING_ERROR_ATTR, None)
    return dict(attrs) if isinstance(attrs, dict) else None


class Router:
    """Retries and fails over one call across ``routes`` (names, in order of preference).

    ``sleep``/``asleep``/``clock`` are injectable so tests never really wait.
    Share ``breakers`` between routers to share circuit state between them.
    """

    def __init__(self, routes: Sequence[str], policy: RetryPolicy | None = None, *,
                 breakers: CircuitBreakers | None = None, sleep: Sleep = time.sleep,
                 asleep: AsyncSleep = asyncio.sleep, clock: Clock = time.monotonic,
                 capabilities: Mapping[str, Sequence[str]] | None = None,
                 policy_version: str | None = None) -> None:
        """``capabilities``: each route's capability labels (for ``capability_delta``);
        ``policy_version``: recorded with every decision, so it can be replayed."""
        if not routes:
            raise ConfigError("routes", "at least one route is needed")
        duplicates = sorted({r for r in routes if list(routes).count(r) > 1})
        if duplicates:
            raise ConfigError("routes", f"route names must be unique, repeated: {duplicates}")
        self.routes = tuple(routes)
        self.policy = policy or RetryPolicy()
        self.breakers = breakers or CircuitBreakers(
            self.policy.circuit_failures, self.policy.circuit_cooldown, clock)
        self.sleep = sleep
        self.asleep = asleep
        self.clock = clock
        self.capabilities = {route: tuple(labels) for route, labels in
                             (capabilities or {}).items()}
        self.policy_version = policy_version

    def run(self, call: Callable[[Attempt], T]) -> tuple[T, RoutingOutcome]:
        """``call(attempt)`` makes one attempt; returns its value and the decision."""
        state = _RoutedCall(self)
        for index, route, breaker in state.open_routes():
            retrying = Retrying(sleep=self.sleep, **state.retry_arguments(breaker))
            try:
                value = retrying(state.attempt, call, index, route, breaker)
            except Exception as exc:
                if not state.may_fail_over(exc):
                    raise
                continue
            return value, state.outcome(route)
        raise state.exhausted()

    async def arun(self, call: Callable[[Attempt], Awaitable[T]]) -> tuple[T, RoutingOutcome]:
        """Async :meth:`run`; waits with ``asleep``."""
        state = _RoutedCall(self)
        for index, route, breaker in state.open_routes():
            retrying = AsyncRetrying(sleep=self.asleep, **state.retry_arguments(breaker))
            try:
                value: T = await retrying(state.aattempt, call, index, route, breaker)
            except Exception as exc:
                if not state.may_fail_over(exc):
                    raise
                continue
            return value, state.outcome(route)
        raise state.exhausted()


class _RoutedCall:
    """The bookkeeping of one routed call (one per call, never shared)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        deadline = router.policy.deadline
        self.deadline_at = router.clock() + deadline if deadline is not None else None
        self.records: list[AttemptRecord] = []
        self.skipped: dict[str, tuple[RoutingReason, str]] = {}
        self.route_attempts = 0

    def open_routes(self) -> Iterator[tuple[int, str, CircuitBreaker]]:
        router = self.router
        for index, route in enumerate(router.routes):
            if self.deadline_at is not None and router.clock() >= self.deadline_at:
                self.skipped[route] = ("latency_slo", f"the {router.policy.deadline:g}s "
                                       "deadline passed before it was tried")
                continue
            breaker = router.breakers.get(route)
            if not breaker.acquire():
                self.skipped[route] = ("failover", f"circuit open after "
                                       f"{breaker.failures} consecutive failures, retry in "
                                       f"{breaker.retry_in():.1f}s")
                continue
            self.route_attempts = 0
            yield index, route, breaker

    def retry_arguments(self, breaker: CircuitBreaker) -> dict[str, Any]:
        return retry_arguments(self.router.policy, deadline_at=self.deadline_at,
                               clock=self.router.clock,
                               extra_stop=stop_when(lambda: breaker.state == "open"))

    def _begin(self, index: int, route: str) -> Attempt:
        self.route_attempts += 1
        return Attempt(route, index, len(self.records) + 1, self.route_attempts)

    def attempt(self, call: Callable[[Attempt], T], index: int, route: str,
                breaker: CircuitBreaker) -> T:
        attempt = self._begin(index, route)
        try:
            value = call(attempt)
        except Exception as exc:
            self._failed(attempt, breaker, exc)
            raise
        except BaseException:
            breaker.release()
            raise
        self._succeeded(attempt, breaker)
        return value

    async def aattempt(self, call: Callable[[Attempt], Awaitable[T]], index: int, route: str,
                       breaker: CircuitBreaker) -> T:
        attempt = self._begin(index, route)
        try:
            value = await call(attempt)
        except Exception as exc:
            self._failed(attempt, breaker, exc)
            raise
        except BaseException:
            breaker.release()
            raise
        self._succeeded(attempt, breaker)
        return value

    def _succeeded(self, attempt: Attempt, breaker: CircuitBreaker) -> None:
        breaker.record_success()
        self.records.append(AttemptRecord(attempt))

    def _failed(self, attempt: Attempt, breaker: CircuitBreaker, error: Exception) -> None:
        failure = classify(error)
        if isinstance(error, GuardrailViolation):
            breaker.release()  # refused before the provider was called: says nothing
        elif failure.kind == "request":
            breaker.record_success()  # the provider answered: the route is up
        else:
            breaker.record_failure()
        inputs, outputs = error_usage(error)
        self.records.append(AttemptRecord(attempt, failure, error, inputs, outputs))

    def may_fail_over(self, error: Exception) -> bool:
        """False (after labelling the error) when it must reach the caller now."""
        failure = self.records[-1].failure if self.records else None
        if failure is not None and failure.failover:
            return True
        _label(error, self.outcome(self.records[-1].attempt.route if self.records else None))
        return False

    def last_error(self) -> BaseException | None:
        return self.records[-1].error if self.records else None

    def exhausted(self) -> Exception:
        outcome = self.outcome(None)
        refusals = [r.error for r in self.records if isinstance(r.error, GuardrailViolation)]
        if refusals:
            refusal = refusals[-1]
            _label(refusal, outcome)
            return refusal
        failures = []
        for route in self.router.routes:
            if route in self.skipped:
                failures.append(RouteFailure(route, 0, skipped=self.skipped[route][1]))
                continue
            tried = [r for r in self.records if r.attempt.route == route]
            last = tried[-1] if tried else None
            failures.append(RouteFailure(
                route, len(tried),
                error_type=last.failure.reason if last and last.failure else None,
                last_error=last.error if last else None))
        error = AllRoutesFailed(failures, outcome.attributes())
        error.__cause__ = self.last_error()
        return error

    def outcome(self, selected: str | None) -> RoutingOutcome:
        router = self.router
        requested = router.routes[0]
        return RoutingOutcome(requested, selected, self._reason(requested, selected),
                              tuple(self.records), self._status(requested, selected),
                              self._detail(requested), self._delta(requested, selected),
                              router.policy_version, self._budget_state())

    def _status(self, requested: str, selected: str | None) -> RouteStatus:
        if selected == requested:
            return "selected"
        if selected is not None:
            return "degraded"
        errors = [r.error for r in self.records if r.error is not None]
        if errors and all(isinstance(error, GuardrailViolation) for error in errors):
            return "blocked"
        return "failed_closed"

    def _detail(self, requested: str) -> str | None:
        skipped = self.skipped.get(requested)
        if skipped is not None and skipped[1].startswith("circuit open"):
            return DETAIL_CIRCUIT_OPEN
        return None

    def _delta(self, requested: str, selected: str | None) -> tuple[str, ...] | None:
        capabilities = self.router.capabilities
        if not capabilities:
            return None
        wanted = capabilities.get(requested, ())
        kept = capabilities.get(selected, ()) if selected is not None else ()
        return tuple(f"lost:{label}" for label in wanted if label not in kept)

    def _budget_state(self) -> tuple[tuple[str, float], ...]:
        router = self.router
        state: list[tuple[str, float]] = [
            ("attempts_remaining", float(max(0, router.policy.max_attempts
                                             - self.route_attempts)))]
        if self.deadline_at is not None:
            state.append(("deadline_remaining_s",
                          round(max(0.0, self.deadline_at - router.clock()), 3)))
        return tuple(state)

    def _reason(self, requested: str, selected: str | None) -> RoutingReason:
        if selected == requested:
            return "normal"
        if requested in self.skipped:
            return self.skipped[requested][0]
        tried = [r for r in self.records if r.attempt.route == requested and r.failure]
        if not tried:
            return "failover"
        last = tried[-1]
        if isinstance(last.error, GuardrailViolation):
            return "cost_policy" if "budget" in last.error.error_type else "safety_policy"
        if last.failure is not None and last.failure.reason in (QUOTA_THROTTLED, QUOTA_EXHAUSTED):
            return "quota_throttled"
        return "failover"


def _label(error: BaseException, outcome: RoutingOutcome) -> None:
    # An exception type with __slots__ cannot carry them; the span keeps error.type.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, ROUTING_ERROR_ATTR, outcome.attributes())
