"""Where approval requests live: the ``holds`` facet of the one store layer.

The 0.1 module path, kept for its names: the records and the contract are in
:mod:`spanguard.guardrails.stores` (``store.holds`` of a :class:`~spanguard.
guardrails.stores.Store`), which serves budgets and the audit log from the same
connection. Store selection is the one of every store: a URL argument, else
``SPANGUARD_STORE_URL``, else ``sqlite:///$SPANGUARD_HOME/guardrails.db``.
"""

from __future__ import annotations

from spanguard.guardrails.stores import (
    STORE_URL_ENV,
    HoldStore,
    MemoryHolds,
    check_store_url,
    open_store,
    resolve_store_url,
    sqlite_path,
)
from spanguard.guardrails.stores.records import ACTIVE, HoldRecord, HoldStatus

MemoryHoldStore = MemoryHolds


def open_hold_store(store_url: str | None = None) -> HoldStore:
    """The holds of :func:`~spanguard.guardrails.stores.open_store` ``(store_url)``."""
    return open_store(store_url).holds


__all__ = [
    "ACTIVE",
    "STORE_URL_ENV",
    "HoldRecord",
    "HoldStatus",
    "HoldStore",
    "MemoryHoldStore",
    "check_store_url",
    "open_hold_store",
    "resolve_store_url",
    "sqlite_path",
]
