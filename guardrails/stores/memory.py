"""The in-process store: one lock, no persistence (tests, single-process apps).

``open_store("memory://")`` or ``open_store("memory://NAME")`` returns the
process-wide store of that name (the same URL in one process is the same store);
``MemoryStore()`` built in code is a fresh private one. Facets built on their own
(0.1 style: ``MemoryBudgetStore()``) get a private store of their own.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from spanguard.guardrails.stores.contracts import (
    BudgetStore,
    Charge,
    ChargeResult,
    Reservation,
    Store,
    fits,
)
from spanguard.guardrails.stores.records import (
    GENESIS,
    AuditRecord,
    HoldRecord,
    HoldStatus,
    may_move,
)

PRIVATE_URL = "memory://(private)"
_SWEEP_EVERY = 512  # charges between sweeps of expired counters


class MemoryStore(Store):
    """Budgets, holds and audit records in dicts and lists behind one lock."""

    def __init__(self, url: str = PRIVATE_URL) -> None:
        self.url = url
        self.lock = threading.Lock()
        # Budget counters: key -> {bucket: amount}; key -> (bucket, span, total) of
        # the last window summed, kept current on every add, so a rolling window is
        # not re-summed on every check; key -> time the counter may be dropped.
        self.counters: dict[str, dict[int, float]] = {}
        self.totals: dict[str, tuple[int, int, float]] = {}
        self.expires: dict[str, float] = {}
        # Reservations in flight: id -> reservation; per counter key, the sum held and
        # how many charges hold it (the last one out resets the sum: no float residue);
        # a heap of (expires, id) to drop the ones nobody settled.
        self.reservations: dict[str, Reservation] = {}
        self.held_totals: dict[str, float] = {}
        self.held_counts: dict[str, int] = {}
        self.expiry_heap: list[tuple[float, str]] = []
        self.hold_records: dict[str, HoldRecord] = {}
        self.suspended: dict[str, str] = {}
        self.audit_rows: list[AuditRecord] = []
        self.budgets = MemoryBudgets(self)
        self.holds = MemoryHolds(self)
        self.audit = MemoryAudit(self)

    def close(self) -> None:
        """Nothing to release: the records live as long as the store object."""


class MemoryBudgets(BudgetStore):
    """``store.budgets`` of a :class:`MemoryStore` (0.1 name: ``MemoryBudgetStore``)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.url = self.store.url
        self._lock = self.store.lock
        self._counters = self.store.counters
        self._totals = self.store.totals
        self._expires = self.store.expires
        self._reservations = self.store.reservations
        self._held_totals = self.store.held_totals
        self._held_counts = self.store.held_counts
        self._heap = self.store.expiry_heap
        self._ops = itertools.count(1)

    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        with self._lock:
            result = self._check(charges, now)
            if result.admitted:
                self._apply(charges, now)
            return result

    def add(self, charges: Sequence[Charge], now: float) -> None:
        with self._lock:
            self._apply(charges, now)

    def spent(self, key: str, bucket: int, span: int) -> float:
        with self._lock:
            return self._window(key, bucket, span)

    def reserve(self, reservation: Reservation, now: float) -> ChargeResult:
        with self._lock:
            result = self._check(reservation.charges, now)
            if result.admitted:
                self._reservations[reservation.id] = reservation
                totals, counts = self._held_totals, self._held_counts
                for charge in reservation.charges:
                    key = charge.key
                    totals[key] = totals.get(key, 0.0) + charge.amount
                    counts[key] = counts.get(key, 0) + 1
                heap = self._heap
                heapq.heappush(heap, (reservation.expires, reservation.id))
                if len(heap) > 2 * len(self._reservations) + 64:
                    # Settled reservations leave their entries behind: drop them.
                    heap[:] = [(r.expires, r.id) for r in self._reservations.values()]
                    heapq.heapify(heap)
            return result

    def settle(self, reservation: Reservation, amounts: Sequence[float], now: float) -> None:
        with self._lock:
            self._drop(reservation.id)
            self._apply(reservation.charges, now, amounts)

    def release(self, reservation: Reservation, now: float) -> None:
        with self._lock:
            self._drop(reservation.id)

    def in_flight(self, key: str, now: float) -> float:
        with self._lock:
            self._expire(now)
            return self._held_totals.get(key, 0.0)

    def close(self) -> None:
        self.store.close()

    def _check(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        heap = self._heap
        if heap and heap[0][0] <= now:
            self._expire(now)
        spent = []
        held = []
        for index, charge in enumerate(charges):
            total = self._window(charge.key, charge.bucket, charge.span)
            reserved = self._held_totals.get(charge.key, 0.0)
            spent.append(total)
            held.append(reserved)
            if charge.limit is not None and not fits(total + reserved, charge.amount,
                                                     charge.limit):
                return ChargeResult(False, tuple(spent), index, tuple(held))
        return ChargeResult(True, tuple(spent), None, tuple(held))

    def _drop(self, reservation: str) -> None:
        held = self._reservations.pop(reservation, None)
        if held is None:
            return
        totals, counts = self._held_totals, self._held_counts
        for charge in held.charges:
            key = charge.key
            left = counts[key] - 1
            if left:
                counts[key] = left
                totals[key] -= charge.amount
            else:  # the last one out: no float residue left behind
                del counts[key], totals[key]

    def _expire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires, reservation = heapq.heappop(heap)
            held = self._reservations.get(reservation)
            if held is not None and held.expires == expires:
                self._drop(reservation)

    def _window(self, key: str, bucket: int, span: int) -> float:
        cached = self._totals.get(key)
        if cached is not None and cached[0] == bucket and cached[1] == span:
            return cached[2]
        buckets = self._counters.get(key)
        if not buckets:
            return 0.0
        low = bucket - span
        total = sum(v for b, v in buckets.items() if low < b <= bucket)
        self._totals[key] = (bucket, span, total)
        return total

    def _apply(self, charges: Sequence[Charge], now: float,
               amounts: Sequence[float] | None = None) -> None:
        """Add each charge's amount (or ``amounts[i]`` instead) to its bucket."""
        for index, (key, bucket, span, amount, _, ttl) in enumerate(charges):
            if amounts is not None:
                amount = amounts[index]
            buckets = self._counters.get(key)
            if buckets is None:
                buckets = self._counters[key] = {}
            buckets[bucket] = buckets.get(bucket, 0.0) + amount
            cached = self._totals.get(key)
            if cached is not None:
                if bucket > cached[0]:
                    del self._totals[key]
                elif bucket > cached[0] - cached[1]:
                    self._totals[key] = (cached[0], cached[1], cached[2] + amount)
            if len(buckets) > span:
                low = bucket - span
                for stale in [b for b in buckets if b <= low]:
                    del buckets[stale]
            until = now + ttl
            if self._expires.get(key, 0.0) < until:
                self._expires[key] = until
        if next(self._ops) % _SWEEP_EVERY == 0:
            for key in [k for k, until in self._expires.items() if until < now]:
                del self._expires[key]
                self._counters.pop(key, None)
                self._totals.pop(key, None)


class MemoryHolds:
    """``store.holds`` of a :class:`MemoryStore` (0.1 name: ``MemoryHoldStore``)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.url = self.store.url
        self._lock = self.store.lock
        self._holds = self.store.hold_records
        self._suspended = self.store.suspended

    def create(self, record: HoldRecord) -> None:
        with self._lock:
            self._holds[record.id] = record

    def get(self, hold_id: str) -> HoldRecord | None:
        return self._holds.get(hold_id)

    def matching(self, tool: str, payload_hash: str) -> list[HoldRecord]:
        with self._lock:
            found = [r for r in self._holds.values()
                     if r.tool == tool and r.payload_hash == payload_hash]
        return sorted(found, key=lambda r: r.created_at, reverse=True)

    def list(self, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]:
        with self._lock:
            found = [r for r in self._holds.values() if status is None or r.status == status]
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]

    def transition(self, hold_id: str, expected: HoldStatus, new: HoldStatus,
                   now: float, **changes: Any) -> HoldRecord | None:
        with self._lock:
            record = self._holds.get(hold_id)
            if record is None or not may_move(record, expected, new, now):
                return None
            updated = replace(record, status=new, **changes)
            self._holds[hold_id] = updated
            return updated

    def suspend(self, tool: str, reason: str) -> None:
        with self._lock:
            self._suspended[tool] = reason

    def suspension(self, tool: str) -> str | None:
        return self._suspended.get(tool)

    def lift(self, tool: str) -> None:
        with self._lock:
            self._suspended.pop(tool, None)


class MemoryAudit:
    """``store.audit`` of a :class:`MemoryStore` (0.1 name: ``MemoryAuditBackend``)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self._lock = self.store.lock

    @property
    def rows(self) -> list[AuditRecord]:
        """The stored chain itself (tests tamper with it to prove detection)."""
        return self.store.audit_rows

    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        with self._lock:
            rows = self.store.audit_rows
            record = make(len(rows) + 1, rows[-1].hash if rows else GENESIS)
            rows.append(record)
            return record

    def records(self) -> list[AuditRecord]:
        with self._lock:
            return list(self.store.audit_rows)
