"""A per-route circuit breaker: stop calling a route that keeps failing, for a while.

closed     calls go through; each failure counts, a success resets the count;
open       after ``failures`` consecutive failures: the route is skipped until
           ``cooldown`` seconds have passed (no request reaches it);
half-open  after the cool-down: exactly one trial call is let through; its
           success closes the circuit, its failure opens it for another cool-down.

The clock is injectable so tests (and simulations) move time by hand. One lock
per breaker: the state is three numbers, updated on the failure path and on the
first success after failures only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]


class CircuitBreaker:
    """Consecutive-failure breaker for one route. ``failures=0`` never opens."""

    __slots__ = ("_count", "_lock", "_opened_at", "_trial", "clock", "cooldown", "failures")

    def __init__(self, failures: int, cooldown: float, clock: Clock = time.monotonic) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self._count = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> CircuitState:
        opened_at = self._opened_at
        if opened_at is None:
            return "closed"
        return "open" if self.clock() - opened_at < self.cooldown else "half_open"

    def retry_in(self) -> float:
        """Seconds until the route may be tried again (0 when it may be tried now)."""
        opened_at = self._opened_at
        if opened_at is None:
            return 0.0
        return max(0.0, opened_at + self.cooldown - self.clock())

    def acquire(self) -> bool:
        """May a call start on this route now? In half-open state only one may."""
        if self._opened_at is None:
            return True
        with self._lock:
            if self.state == "open" or self._trial:
                return False
            if self._opened_at is not None:
                self._trial = True
            return True

    def record_success(self) -> None:
        if self._count or self._opened_at is not None or self._trial:
            with self._lock:
                self._count = 0
                self._opened_at = None
                self._trial = False

    def record_failure(self) -> None:
        with self._lock:
            self._trial = False
            if self._opened_at is not None:
                self._opened_at = self.clock()
                return
            self._count += 1
            if self.failures and self._count >= self.failures:
                self._opened_at = self.clock()

    def release(self) -> None:
        """The call ended without telling us anything about the route (cancelled, refused)."""
        with self._lock:
            self._trial = False


class CircuitBreakers:
    """One breaker per route name, created on first use; share one across wrappers."""

    def __init__(self, failures: int, cooldown: float, clock: Clock = time.monotonic) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, route: str) -> CircuitBreaker:
        breaker = self._breakers.get(route)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(
                    route, CircuitBreaker(self.failures, self.cooldown, self.clock))
        return breaker
