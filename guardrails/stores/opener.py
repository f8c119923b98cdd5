"""``open_store``: the one way from a URL to a store, shared per URL in the process.

Every ``memory://`` or ``memory://NAME`` URL names a process-wide store (kept for
the life of the process, like a named in-memory database). A SQLite or Redis
store is kept while anything uses it (a weak cache, per process: a forked child
opens its own connection), so the guards, the approvals API and the audit sink
of one process share one connection per URL. A store built in code
(``MemoryStore()``, ``SQLiteStore(path)``, ``RedisStore(url)``) is private to
its builder and never returned here.
"""

from __future__ import annotations

import os
import threading
import weakref

from spanguard.guardrails.stores.contracts import Store
from spanguard.guardrails.stores.memory import MemoryStore
from spanguard.guardrails.stores.redis import RedisStore
from spanguard.guardrails.stores.sqlite import SQLiteStore
from spanguard.guardrails.stores.urls import check_store_url, resolve, sqlite_path

_LOCK = threading.Lock()
_MEMORY: dict[str, MemoryStore] = {}
_SHARED: weakref.WeakValueDictionary[tuple[int, str], Store] = weakref.WeakValueDictionary()


def open_store(url: str | None = None, *,
               home: str | os.PathLike[str] | None = None) -> Store:
    """The store at ``url``, else ``SPANGUARD_STORE_URL``, else SQLite under the home.

    Raises ``ConfigError`` for a URL no store understands (naming where it came
    from) and ``StoreError`` when a SQLite file cannot be opened. Redis connects
    on first use.
    """
    url, source = resolve(url, home)
    check_store_url(url, source)
    scheme = url.split("://", 1)[0]
    with _LOCK:
        if scheme == "memory":
            memory = _MEMORY.get(url)
            if memory is None:
                memory = _MEMORY[url] = MemoryStore(url)
            return memory
        path = sqlite_path(url) if scheme == "sqlite" else None
        key = (os.getpid(), f"sqlite://{path}" if path is not None else url)
        store = _SHARED.get(key)
        if store is None or store.closed:
            store = SQLiteStore(path) if path is not None else RedisStore(url)
            _SHARED[key] = store
        return store
