"""The one store layer: budgets, holds and audit records in memory, SQLite or Redis.

One backend class per technology (:class:`MemoryStore`, :class:`SQLiteStore`,
:class:`RedisStore`) serves the three record kinds through facets that share
its connection: ``store.budgets`` (window-budget counters), ``store.holds``
(approval requests) and ``store.audit`` (the hash-chained audit log). The
contracts are in :mod:`.contracts`, URL rules in :mod:`.urls`, and
:func:`open_store` is the one way from a URL to a store (see :mod:`.opener` for
what is shared: the same URL in one process is the same store).

The 0.1 names stay importable from here: ``open_budget_store``, ``BudgetStore``,
``MemoryBudgetStore``, ``SQLiteBudgetStore``, ``RedisBudgetStore`` (the budget
facets), ``StoreConfig``.
"""

from __future__ import annotations

from spanguard.guardrails.stores.contracts import (
    AuditBackend,
    BudgetStore,
    Charge,
    ChargeResult,
    HoldStore,
    Reservation,
    Store,
    fits,
)
from spanguard.guardrails.stores.memory import MemoryAudit, MemoryBudgets, MemoryHolds, MemoryStore
from spanguard.guardrails.stores.opener import open_store
from spanguard.guardrails.stores.redis import RedisAudit, RedisBudgets, RedisHolds, RedisStore
from spanguard.guardrails.stores.sqlite import SQLiteAudit, SQLiteBudgets, SQLiteHolds, SQLiteStore
from spanguard.guardrails.stores.urls import (
    DB_NAME,
    STORE_URL_ENV,
    StoreConfig,
    check_store_url,
    default_store_url,
    parse_store,
    redact_url,
    resolve_store_url,
    sqlite_path,
)

MemoryBudgetStore = MemoryBudgets
SQLiteBudgetStore = SQLiteBudgets
RedisBudgetStore = RedisBudgets


def open_budget_store(url: str | None = None) -> BudgetStore:
    """The budgets of :func:`open_store` ``(url)`` (the 0.1 entry point)."""
    return open_store(url).budgets


__all__ = [
    "DB_NAME",
    "STORE_URL_ENV",
    "AuditBackend",
    "BudgetStore",
    "Charge",
    "ChargeResult",
    "HoldStore",
    "MemoryAudit",
    "MemoryBudgetStore",
    "MemoryBudgets",
    "MemoryHolds",
    "MemoryStore",
    "RedisAudit",
    "RedisBudgetStore",
    "RedisBudgets",
    "RedisHolds",
    "RedisStore",
    "Reservation",
    "SQLiteAudit",
    "SQLiteBudgetStore",
    "SQLiteBudgets",
    "SQLiteHolds",
    "SQLiteStore",
    "Store",
    "StoreConfig",
    "check_store_url",
    "default_store_url",
    "fits",
    "open_budget_store",
    "open_store",
    "parse_store",
    "redact_url",
    "resolve_store_url",
    "sqlite_path",
]
