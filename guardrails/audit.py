"""The tamper-evident audit log: every governance event, hash-chained.

Each record carries the hash of the one before it and its own hash over its
content (sha256 of canonical JSON), so editing a record breaks its own hash,
deleting one leaves a gap in the sequence and a dangling ``prev_hash``, and
swapping two breaks both links. :meth:`AuditLog.verify` walks the chain and names
the first broken record. A chain cannot prove its own tail was not cut off:
anchor :attr:`AuditCheck.head` somewhere else (a ticket, a log shipper) when
that matters.

Records hold ids, hashes and identities of makers and checkers (that is the
point of an audit), never tool arguments. Backends follow the hold store's URL
(:func:`~spanguard.guardrails.hold_store.resolve_store_url`): SQLite table
``audit`` in the same file by default, Redis list, or memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from spanguard.errors import ConfigError, StoreError
from spanguard.guardrails._redis import connect
from spanguard.guardrails.hold_store import check_store_url, resolve_store_url, sqlite_path
from spanguard.guardrails.steps import Decision, RunState
from spanguard.hashing import canonical_json

logger = logging.getLogger("spanguard")

GENESIS = "sha256:" + "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    """One event. ``hash`` covers every other field, ``prev_hash`` included."""

    seq: int
    ts: float
    event: str
    actor: str | None
    subject: str | None
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str = ""

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "event": self.event, "actor": self.actor,
                "subject": self.subject, "detail": dict(self.detail),
                "prev_hash": self.prev_hash}

    def computed_hash(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_json(self.body()).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditRecord:
        return cls(seq=int(data["seq"]), ts=float(data["ts"]), event=str(data["event"]),
                   actor=data.get("actor"), subject=data.get("subject"),
                   detail=dict(data.get("detail") or {}), prev_hash=str(data["prev_hash"]),
                   hash=str(data.get("hash", "")))


@dataclass(frozen=True)
class AuditCheck:
    """The result of :meth:`AuditLog.verify`; ``broken_seq`` is the first bad record."""

    ok: bool
    records: int
    head: str
    broken_seq: int | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "head": self.head,
                "broken_seq": self.broken_seq, "reason": self.reason}


def check_chain(records: Iterable[AuditRecord]) -> AuditCheck:
    """Walk records in stored order; the first one that does not fit is named."""
    prev = GENESIS
    count = 0
    for expected_seq, record in enumerate(records, start=1):
        count = expected_seq
        if record.computed_hash() != record.hash:
            return AuditCheck(False, count, prev, record.seq,
                              f"record {record.seq} was altered: its hash does not match "
                              "its content")
        if record.seq != expected_seq:
            return AuditCheck(False, count, prev, record.seq,
                              f"record {record.seq} is at position {expected_seq}: a record "
                              "before it was deleted or the order was changed")
        if record.prev_hash != prev:
            return AuditCheck(False, count, prev, record.seq,
                              f"record {record.seq} does not follow record "
                              f"{expected_seq - 1}: the chain was cut or reordered")
        prev = record.hash
    return AuditCheck(True, count, prev)


class _Backend(Protocol):
    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord: ...

    def records(self) -> list[AuditRecord]: ...


class AuditLog:
    """Append-only, hash-chained. Appends are atomic per backend (one chain, no forks)."""

    def __init__(self, backend: _Backend, clock: Callable[[], float] = time.time) -> None:
        self._backend = backend
        self._clock = clock

    def append(self, event: str, *, actor: str | None = None, subject: str | None = None,
               **detail: Any) -> AuditRecord:
        """Add one record; ``detail`` must be JSON-serialisable plain values."""
        now = self._clock()
        clean = json.loads(canonical_json(detail))

        def make(seq: int, prev_hash: str) -> AuditRecord:
            draft = AuditRecord(seq, now, event, actor, subject, clean, prev_hash)
            return AuditRecord(seq, now, event, actor, subject, clean, prev_hash,
                               draft.computed_hash())

        return self._backend.append(make)

    def records(self) -> list[AuditRecord]:
        """Every record in stored order (by sequence number)."""
        return self._backend.records()

    def verify(self) -> AuditCheck:
        return check_chain(self.records())


def open_audit_log(store_url: str | None = None,
                   clock: Callable[[], float] = time.time) -> AuditLog:
    """The audit log beside the hold store (same URL rules)."""
    url = check_store_url(resolve_store_url(store_url))
    scheme = urlparse(url).scheme
    backend: _Backend
    if scheme == "memory":
        with _MEMORY_LOCK:
            backend = _MEMORY_LOGS.setdefault(url, MemoryAuditBackend())
    elif scheme == "sqlite":
        backend = SqliteAuditBackend(str(sqlite_path(url)))
    else:
        backend = RedisAuditBackend(url)
    return AuditLog(backend, clock)


class MemoryAuditBackend:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: list[AuditRecord] = []

    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        with self._lock:
            prev = self.rows[-1].hash if self.rows else GENESIS
            record = make(len(self.rows) + 1, prev)
            self.rows.append(record)
            return record

    def records(self) -> list[AuditRecord]:
        with self._lock:
            return list(self.rows)


_MEMORY_LOGS: dict[str, MemoryAuditBackend] = {}
_MEMORY_LOCK = threading.Lock()

_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    record TEXT NOT NULL
);
"""


class SqliteAuditBackend:
    """``audit`` table; ``BEGIN IMMEDIATE`` makes read-last-then-insert atomic across
    processes, so two writers never fork the chain."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_AUDIT_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(path, f"cannot open the audit log: {exc}") from exc

    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    row = self._db.execute(
                        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                    record = make(row[0] + 1 if row else 1, row[1] if row else GENESIS)
                    self._db.execute("INSERT INTO audit VALUES (?, ?, ?)",
                                     (record.seq, record.hash,
                                      json.dumps(record.to_json())))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(self.path, f"cannot append to the audit log: {exc}") from exc
            return record

    def records(self) -> list[AuditRecord]:
        with self._lock:
            try:
                rows = self._db.execute("SELECT record FROM audit ORDER BY seq").fetchall()
            except sqlite3.Error as exc:
                raise StoreError(self.path, f"cannot read the audit log: {exc}") from exc
        return [AuditRecord.from_json(json.loads(r[0])) for r in rows]


class RedisAuditBackend:
    """A Redis list; WATCH on the list makes read-last-then-push atomic (retried)."""

    key = "spanguard:audit"

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis, self._redis_module = connect(url, decode_responses=True)

    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        redis = self._redis_module
        try:
            with self._redis.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(self.key)
                        length = int(pipe.llen(self.key))
                        last = pipe.lindex(self.key, -1)
                        prev = json.loads(last)["hash"] if last else GENESIS
                        record = make(length + 1, prev)
                        pipe.multi()
                        pipe.rpush(self.key, json.dumps(record.to_json()))
                        pipe.execute()
                        return record
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise StoreError(self.url, f"cannot append to the audit log: {exc}") from exc

    def records(self) -> list[AuditRecord]:
        try:
            rows = self._redis.lrange(self.key, 0, -1)
        except self._redis_module.RedisError as exc:
            raise StoreError(self.url, f"cannot read the audit log: {exc}") from exc
        return [AuditRecord.from_json(json.loads(r)) for r in rows]


@dataclass
class EnforcerAuditSink:
    """Audits the enforcer's refusals (budget denials and the like).

    Hold and verification decisions are skipped here: their guards write richer
    records themselves (request id, maker, checker). A failing audit write is
    logged, never raised: the refusal itself has already happened (fail closed).
    """

    store_url: str | None = None
    _log: AuditLog | None = field(default=None, init=False, repr=False)

    def __call__(self, decision: Decision, run: RunState, subject: str | None) -> None:
        if decision.kind != "deny" or decision.guard in SELF_AUDITING_GUARDS:
            return
        try:
            if self._log is None:
                self._log = open_audit_log(self.store_url)
            self._log.append(f"{decision.guard}.refused", actor=run.identity, subject=subject,
                             reason=decision.reason, trace_id=run.trace_id,
                             error_type=getattr(decision.error, "error_type", None))
        except (StoreError, ConfigError) as exc:
            logger.warning("spanguard: could not audit a %s refusal: %s", decision.guard, exc)


# Guards whose modules append their own, more detailed, audit records.
SELF_AUDITING_GUARDS: set[str] = set()
