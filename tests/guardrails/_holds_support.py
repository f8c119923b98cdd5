"""Shared helpers for the hold tests: a controllable clock and store factories.

Stores are built in code here (private, each with its own connection), not opened
by URL (shared per URL in a process): the race tests need the separate connections
that separate processes would have.
"""

from __future__ import annotations

from pathlib import Path

from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.audit import AuditLog, MemoryAuditBackend
from spanguard.guardrails.hold_store import MemoryHoldStore
from spanguard.guardrails.stores import RedisStore, SQLiteStore, Store, sqlite_path


class Clock:
    """Injectable time: tests move it instead of sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def memory_approvals(clock: Clock | None = None) -> Approvals:
    clock = clock or Clock()
    return Approvals(MemoryHoldStore(), AuditLog(MemoryAuditBackend(), clock), clock)


def approvals_for(kind: str, tmp_path: Path, redis_url: str | None = None,
                  clock: Clock | None = None) -> Approvals:
    """Approvals over a fresh store of the given kind (memory, sqlite, redis)."""
    clock = clock or Clock()
    if kind == "memory":
        return memory_approvals(clock)
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'guardrails.db'}"
    else:
        assert redis_url is not None
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        url = redis_url
    return Approvals.over(private_store(url), clock)


def private_store(url: str) -> Store:
    """A new SQLite or Redis store with a connection of its own."""
    return SQLiteStore(sqlite_path(url)) if url.startswith("sqlite:") else RedisStore(url)


def separate_connection(approvals: Approvals) -> Approvals:
    """The same store as ``approvals``, over another connection (as another process)."""
    return Approvals.over(private_store(approvals.store.url), approvals.clock)
