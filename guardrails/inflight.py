"""What one run's model calls in flight have reserved: the run's half of reserve -> settle.

Parallel branches of a run (LangGraph ``Send`` fan-out, parallel edges,
``model.batch`` inside a node) call the model at the same time; each call's
prediction is held here from the moment it is admitted until it settles, so the
next check counts it. The enforcer holds the run's lock around every hook, so a
check and its reservation are one step. An entry nobody settles expires.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spanguard.guardrails.steps import RunState

_KEY = "spanguard.in_flight"


class InFlight:
    """Sums of the unsettled reservations of one run, and each reservation."""

    __slots__ = ("_earliest", "_entries", "_next", "calls", "cost", "input", "total")

    def __init__(self) -> None:
        self.calls = 0
        self.input = self.total = self.cost = 0.0
        # token -> (expires, input tokens, total tokens, cost)
        self._entries: dict[int, tuple[float, float, float, float]] = {}
        self._next = 0
        self._earliest = math.inf  # no entry expires before this: most checks stop here

    def reserve(self, tokens_in: float, tokens: float, cost: float, expires: float) -> int:
        """Hold one call's prediction; the token names it for :meth:`settle`."""
        self._next += 1
        self._entries[self._next] = (expires, tokens_in, tokens, cost)
        if expires < self._earliest:
            self._earliest = expires
        self.calls += 1
        self.input += tokens_in
        self.total += tokens
        self.cost += cost
        return self._next

    def settle(self, token: int) -> None:
        """Drop a reservation (the call's real usage is on the run now, or it had none)."""
        entry = self._entries.pop(token, None)
        if entry is None:
            return
        if not self._entries:  # the last one out: no float residue left behind
            self.calls = 0
            self.input = self.total = self.cost = 0.0
            self._earliest = math.inf
            return
        self.calls -= 1
        self.input -= entry[1]
        self.total -= entry[2]
        self.cost -= entry[3]

    def expire(self, now: float) -> None:
        """Drop reservations whose time is up (a call that never came back)."""
        if now < self._earliest:
            return
        for token in [t for t, entry in self._entries.items() if entry[0] <= now]:
            self.settle(token)
        self._earliest = min((entry[0] for entry in self._entries.values()), default=math.inf)


def in_flight(run: RunState) -> InFlight:
    """The run's reservations (created at its first model call)."""
    flight: InFlight | None = run.scratch.get(_KEY)
    if flight is None:
        flight = run.scratch[_KEY] = InFlight()
    return flight
