"""What every store backend provides: one :class:`Store` with three facets.

A backend (memory, SQLite, Redis) owns one connection and one lock; its three
facets are views that share them:

* ``store.budgets`` (:class:`BudgetStore`): window-budget counters and the
  reservations of calls in flight. The operation that matters, ``reserve``,
  checks every counter of a step against its limit (settled spend plus what
  calls in flight have reserved) and, only if all of them fit, records the
  reservation, as ONE atomic operation (a lock in memory, ``BEGIN IMMEDIATE`` in
  SQLite, a Lua script in Redis). Check-then-charge as two calls would let
  concurrent processes each see room and together overspend. After the call,
  ``settle`` replaces the reservation with the real usage (one atomic operation),
  ``release`` drops it; a reservation nobody settles (a crashed process) stops
  counting at its ``expires`` time. A counter is a set of time buckets; a charge
  names the bucket "now" falls in and how many buckets the window spans, so a
  store needs no notion of time beyond expiring old buckets and reservations.
* ``store.holds`` (:class:`HoldStore`): approval requests. Every state change is
  an atomic compare-and-set (``transition``): of an approve and a reject racing on
  one request exactly one wins, and an approval is consumed by exactly one
  execution.
* ``store.audit`` (:class:`AuditBackend`): the hash chain. ``append`` reads the
  last record and adds the next one atomically, so two writers never fork it.

Every backend passes the same tests (tests/guardrails/test_stores.py and the
hold and audit tests run against all three).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from spanguard.guardrails.stores.records import AuditRecord, HoldRecord, HoldStatus


class Charge(NamedTuple):
    """One counter's part of a step: add ``amount`` to ``bucket`` if the window fits.

    The window is the ``span`` buckets ending at ``bucket``; ``limit`` None means
    "count, never refuse"; ``ttl`` is how long (seconds) the counter must outlive
    this charge. A tuple, not a dataclass: several are built per model call.
    """

    key: str
    bucket: int
    span: int
    amount: float
    limit: float | None
    ttl: float


class ChargeResult(NamedTuple):
    """``spent`` holds each checked counter's settled window total before the charge,
    ``reserved`` what calls in flight held on it (both up to the refused counter)."""

    admitted: bool
    spent: tuple[float, ...]
    refused: int | None = None
    reserved: tuple[float, ...] = ()


class Reservation(NamedTuple):
    """A step's charges, held from ``reserve`` until ``settle``/``release``, or until
    ``expires`` (seconds, the clock of ``now``) when nobody settles them. ``id`` is
    unique across processes."""

    id: str
    charges: tuple[Charge, ...]
    expires: float


def fits(spent: float, amount: float, limit: float) -> bool:
    """The one admission rule every store applies (a full budget admits nothing);
    ``spent`` includes what calls in flight have reserved."""
    return spent + amount <= limit and spent < limit


class BudgetStore(ABC):
    """Counters shared by every run (and, for SQLite/Redis, every process) using it."""

    url: str

    @abstractmethod
    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        """All-or-nothing, atomic: add every amount only if every limit still fits
        (reservations in flight count against the limits)."""

    @abstractmethod
    def add(self, charges: Sequence[Charge], now: float) -> None:
        """Add unconditionally (usage that was spent anyway; amounts may be < 0)."""

    @abstractmethod
    def spent(self, key: str, bucket: int, span: int) -> float:
        """The settled window total of one counter (reservations not included)."""

    @abstractmethod
    def reserve(self, reservation: Reservation, now: float) -> ChargeResult:
        """All-or-nothing, atomic: hold every charge of ``reservation`` only if every
        limit fits its settled spend plus the unexpired reservations; drops expired
        reservations first."""

    @abstractmethod
    def settle(self, reservation: Reservation, amounts: Sequence[float], now: float) -> None:
        """Atomic: drop the reservation (if still held) and add ``amounts[i]`` (the
        real usage) to the bucket of ``reservation.charges[i]``."""

    @abstractmethod
    def release(self, reservation: Reservation, now: float) -> None:
        """Drop the reservation; nothing is charged."""

    @abstractmethod
    def in_flight(self, key: str, now: float) -> float:
        """What unexpired reservations hold on one counter."""

    def close(self) -> None:  # noqa: B027 - optional hook: a custom store may hold nothing
        """Close the store this facet belongs to (its holds and audit log too)."""


class HoldStore(Protocol):
    """The storage contract of approval requests."""

    url: str

    def create(self, record: HoldRecord) -> None: ...

    def get(self, hold_id: str) -> HoldRecord | None: ...

    def matching(self, tool: str, payload_hash: str) -> list[HoldRecord]:
        """Holds for this tool and payload, newest first."""
        ...

    def list(self, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]: ...

    def transition(self, hold_id: str, expected: HoldStatus, new: HoldStatus,
                   now: float, **changes: Any) -> HoldRecord | None:
        """Compare-and-set: move ``expected`` -> ``new`` and apply ``changes``.

        Returns the updated record, or None when the hold is not in ``expected``
        (someone else won) or, for a move out of an active state other than to
        ``expired``, when it has expired at ``now``.
        """
        ...

    def suspend(self, tool: str, reason: str) -> None: ...

    def suspension(self, tool: str) -> str | None: ...

    def lift(self, tool: str) -> None: ...


class AuditBackend(Protocol):
    """Where :class:`~spanguard.guardrails.audit.AuditLog` keeps its chain."""

    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        """Atomically: ``make(next seq, hash of the last record)``, then store it."""
        ...

    def records(self) -> list[AuditRecord]:
        """Every record in stored order (by sequence number)."""
        ...


class Store(ABC):
    """One backend serving budgets, holds and audit over one connection.

    Open one by URL with :func:`~spanguard.guardrails.stores.open_store` (shared per
    URL in the process) or build one in code (private to its builder).
    """

    url: str
    budgets: BudgetStore
    holds: HoldStore
    audit: AuditBackend
    closed: bool = False

    @abstractmethod
    def close(self) -> None:
        """Release the connection; the next ``open_store`` of the URL opens a new one."""
