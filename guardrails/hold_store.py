"""Where approval requests live: memory, SQLite (default) or Redis, chosen by a URL.

A hold outlives the process that created it (the maker's agent pauses, a person
approves from a terminal, the agent resumes, possibly elsewhere), so the default
is SQLite under ``SPANGUARD_HOME``; Redis shares holds across machines. Every
state change is an atomic compare-and-set (``transition``): of an approve and a
reject racing on one request exactly one wins, and an approval is consumed by
exactly one execution, in every backend.

Store selection (shared with the budget store): a ``store_url=`` argument, else
``SPANGUARD_STORE_URL``, else ``sqlite:///$SPANGUARD_HOME/guardrails.db``.
URLs: ``memory://``, ``sqlite:///abs/path.db``, ``redis://host:port/db``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

from spanguard.config import resolve_home
from spanguard.errors import ConfigError, StoreError
from spanguard.guardrails._redis import connect

HoldStatus = Literal["pending", "approved", "rejected", "expired", "executed"]
ACTIVE: tuple[HoldStatus, ...] = ("pending", "approved")
DEFAULT_DB = "guardrails.db"
STORE_URL_ENV = "SPANGUARD_STORE_URL"


@dataclass(frozen=True)
class HoldRecord:
    """One approval request. Times are seconds since the epoch (UTC)."""

    id: str
    tool: str
    payload_hash: str
    maker: str
    risk_tier: str
    reason: str
    created_at: float
    expires_at: float
    status: HoldStatus = "pending"
    summary: str = ""
    call_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    checker: str | None = None
    decision_reason: str | None = None
    decided_at: float | None = None
    executed_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.status in ACTIVE and now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HoldRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class HoldStore(Protocol):
    """The storage contract; every backend passes the same tests."""

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


def resolve_store_url(store_url: str | None = None,
                      home: str | os.PathLike[str] | None = None) -> str:
    """``store_url``, else ``SPANGUARD_STORE_URL``, else SQLite under the home."""
    if store_url:
        return store_url
    env = os.environ.get(STORE_URL_ENV)
    if env:
        return env
    return "sqlite://" + str((resolve_home(home) / DEFAULT_DB).resolve())


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path.db`` -> the path; refuses relative or empty paths."""
    path = url[len("sqlite://"):]
    if not path.startswith("/") or not path.strip("/"):
        raise ConfigError(url, "a sqlite store URL needs an absolute path",
                          "write sqlite:///abs/path.db (three slashes)")
    return Path("/" + path.lstrip("/"))


def check_store_url(url: str) -> str:
    """Validate the scheme once, so a typo fails at load time, not at first hold."""
    scheme = urlparse(url).scheme
    if scheme not in ("memory", "sqlite", "redis", "rediss"):
        raise ConfigError(url, f"unknown store scheme {scheme!r}",
                          "use memory://, sqlite:///abs/path.db or redis://host:port/db")
    if scheme == "sqlite":
        sqlite_path(url)
    return url


_MEMORY_STORES: dict[str, MemoryHoldStore] = {}
_MEMORY_LOCK = threading.Lock()


def open_hold_store(store_url: str | None = None) -> HoldStore:
    """The hold store for a URL (see module doc). ``memory://name`` is per process."""
    url = check_store_url(resolve_store_url(store_url))
    scheme = urlparse(url).scheme
    if scheme == "memory":
        with _MEMORY_LOCK:
            return _MEMORY_STORES.setdefault(url, MemoryHoldStore(url))
    if scheme == "sqlite":
        return SqliteHoldStore(sqlite_path(url), url)
    return RedisHoldStore(url)


def _may_move(record: HoldRecord, expected: HoldStatus, new: HoldStatus, now: float) -> bool:
    if record.status != expected:
        return False
    return not (expected in ACTIVE and new != "expired" and now >= record.expires_at)


class MemoryHoldStore:
    """Process-local store, for tests and single-process scripts."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._holds: dict[str, HoldRecord] = {}
        self._suspended: dict[str, str] = {}

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
            if record is None or not _may_move(record, expected, new, now):
                return None
            updated = replace(record, status=new, **changes)
            self._holds[hold_id] = updated
            return updated

    def suspend(self, tool: str, reason: str) -> None:
        self._suspended[tool] = reason

    def suspension(self, tool: str) -> str | None:
        return self._suspended.get(tool)

    def lift(self, tool: str) -> None:
        self._suspended.pop(tool, None)


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_by_payload ON holds (tool, payload_hash, created_at);
CREATE TABLE IF NOT EXISTS hold_suspensions (
    tool TEXT PRIMARY KEY,
    reason TEXT NOT NULL
);
"""


class SqliteHoldStore:
    """SQLite backend: the CAS is one ``UPDATE ... WHERE status = ?`` (atomic in SQLite).

    The full record is kept as JSON beside the indexed columns, so adding a field
    never needs a migration.
    """

    def __init__(self, path: Path, url: str | None = None) -> None:
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SQLITE_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(str(path), f"cannot open the hold store: {exc}",
                             "check SPANGUARD_HOME or SPANGUARD_STORE_URL") from exc

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(str(self.path), f"hold store query failed: {exc}") from exc

    def create(self, record: HoldRecord) -> None:
        self._run("INSERT INTO holds VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (record.id, record.tool, record.payload_hash, record.status,
                   record.created_at, record.expires_at, json.dumps(record.to_json())))

    def get(self, hold_id: str) -> HoldRecord | None:
        row = self._run("SELECT record FROM holds WHERE id = ?", (hold_id,)).fetchone()
        return HoldRecord.from_json(json.loads(row[0])) if row else None

    def matching(self, tool: str, payload_hash: str) -> list[HoldRecord]:
        rows = self._run("SELECT record FROM holds WHERE tool = ? AND payload_hash = ? "
                         "ORDER BY created_at DESC", (tool, payload_hash)).fetchall()
        return [HoldRecord.from_json(json.loads(r[0])) for r in rows]

    def list(self, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]:
        if status is None:
            rows = self._run("SELECT record FROM holds ORDER BY created_at DESC LIMIT ?",
                             (limit,)).fetchall()
        else:
            rows = self._run("SELECT record FROM holds WHERE status = ? "
                             "ORDER BY created_at DESC LIMIT ?", (status, limit)).fetchall()
        return [HoldRecord.from_json(json.loads(r[0])) for r in rows]

    def transition(self, hold_id: str, expected: HoldStatus, new: HoldStatus,
                   now: float, **changes: Any) -> HoldRecord | None:
        current = self.get(hold_id)
        if current is None or not _may_move(current, expected, new, now):
            return None
        updated = replace(current, status=new, **changes)
        guard_expiry = expected in ACTIVE and new != "expired"
        sql = ("UPDATE holds SET status = ?, record = ? WHERE id = ? AND status = ?"
               + (" AND expires_at > ?" if guard_expiry else ""))
        params: tuple[Any, ...] = (new, json.dumps(updated.to_json()), hold_id, expected)
        if guard_expiry:
            params += (now,)
        return updated if self._run(sql, params).rowcount == 1 else None

    def suspend(self, tool: str, reason: str) -> None:
        self._run("INSERT OR REPLACE INTO hold_suspensions VALUES (?, ?)", (tool, reason))

    def suspension(self, tool: str) -> str | None:
        row = self._run("SELECT reason FROM hold_suspensions WHERE tool = ?",
                        (tool,)).fetchone()
        return str(row[0]) if row else None

    def lift(self, tool: str) -> None:
        self._run("DELETE FROM hold_suspensions WHERE tool = ?", (tool,))


# KEYS[1] = hold hash key; ARGV = expected, new, now, guard_expiry, record json
_REDIS_CAS = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= ARGV[1] then return 0 end
if ARGV[4] == '1' and tonumber(redis.call('HGET', KEYS[1], 'expires_at')) <= tonumber(ARGV[3])
then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'record', ARGV[5])
return 1
"""


class RedisHoldStore:
    """Redis backend: one hash per hold; the CAS is a Lua script (atomic in Redis)."""

    prefix = "spanguard:holds"

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis, redis = connect(url, decode_responses=True)
        self._cas = self._redis.register_script(_REDIS_CAS)
        self._error: type[Exception] = redis.RedisError

    def _key(self, hold_id: str) -> str:
        return f"{self.prefix}:{hold_id}"

    def _payload_key(self, tool: str, payload_hash: str) -> str:
        return f"{self.prefix}:by-payload:{tool}:{payload_hash}"

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._error as exc:
            raise StoreError(self.url, f"hold store command failed: {exc}") from exc

    def create(self, record: HoldRecord) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._key(record.id), mapping={
            "status": record.status, "expires_at": repr(record.expires_at),
            "record": json.dumps(record.to_json())})
        pipe.zadd(f"{self.prefix}:index", {record.id: record.created_at})
        pipe.zadd(self._payload_key(record.tool, record.payload_hash),
                  {record.id: record.created_at})
        self._call(pipe.execute)

    def get(self, hold_id: str) -> HoldRecord | None:
        raw = self._call(self._redis.hget, self._key(hold_id), "record")
        return HoldRecord.from_json(json.loads(raw)) if raw else None

    def _records(self, ids: list[str]) -> list[HoldRecord]:
        return [r for r in (self.get(i) for i in ids) if r is not None]

    def matching(self, tool: str, payload_hash: str) -> list[HoldRecord]:
        ids = self._call(self._redis.zrevrange, self._payload_key(tool, payload_hash), 0, -1)
        return self._records(list(ids))

    def list(self, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]:
        ids = self._call(self._redis.zrevrange, f"{self.prefix}:index", 0, -1)
        found = [r for r in self._records(list(ids)) if status is None or r.status == status]
        return found[:limit]

    def transition(self, hold_id: str, expected: HoldStatus, new: HoldStatus,
                   now: float, **changes: Any) -> HoldRecord | None:
        current = self.get(hold_id)
        if current is None or not _may_move(current, expected, new, now):
            return None
        updated = replace(current, status=new, **changes)
        guard_expiry = "1" if expected in ACTIVE and new != "expired" else "0"
        won = self._call(self._cas, [self._key(hold_id)],
                         [expected, new, repr(now), guard_expiry,
                          json.dumps(updated.to_json())])
        return updated if int(won) == 1 else None

    def suspend(self, tool: str, reason: str) -> None:
        self._call(self._redis.hset, f"{self.prefix}:suspended", tool, reason)

    def suspension(self, tool: str) -> str | None:
        value = self._call(self._redis.hget, f"{self.prefix}:suspended", tool)
        return str(value) if value is not None else None

    def lift(self, tool: str) -> None:
        self._call(self._redis.hdel, f"{self.prefix}:suspended", tool)
