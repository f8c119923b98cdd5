"""The embedded store: one SQLite file shared by the processes of one machine.

One connection (WAL mode) and one lock per :class:`SQLiteStore`; the three facets
run their statements through them. Atomicity across processes comes from SQLite
itself: budget charges and audit appends run in ``BEGIN IMMEDIATE`` transactions
(read-check-write with the write lock held), and a hold's compare-and-set is one
``UPDATE ... WHERE status = ?``. Hold and audit records are kept as JSON beside
their indexed columns, so adding a field never needs a migration.

Durability, chosen per record kind (docs/budgets.md, "Durability"):

- Budget charges commit with ``synchronous=NORMAL``: the commit is in the WAL, not
  yet fsynced. A crash of the process (kill -9, OOM) loses nothing; a power loss or
  kernel crash can lose the charges of the last moments before it (those since the
  WAL was last synced: the last checkpoint or the last durable write below), so
  after the reboot a window budget can admit that spend once more. A charge costs
  ~40 us this way against ~180 us with an fsync each, and it sits on every model
  and tool call.
- Holds, suspensions and audit appends commit with ``synchronous=FULL``: an
  approval consumed, a rejection or an audit record never comes back undone after a
  power loss (a consumed approval reappearing would let a held call run twice).
  They are rare, and their fsync also makes every charge before them durable.

A new writer is durable unless it says otherwise (``durable=False``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from spanguard.errors import StoreError
from spanguard.guardrails.stores.contracts import (
    BudgetStore,
    Charge,
    ChargeResult,
    Reservation,
    Store,
    fits,
)
from spanguard.guardrails.stores.records import (
    ACTIVE,
    GENESIS,
    AuditRecord,
    HoldRecord,
    HoldStatus,
    may_move,
)
from spanguard.home import ensure_home, ensure_private_file

_SWEEP_EVERY = 512  # charges between sweeps of expired counters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_counters (
    key TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    amount REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (key, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS budget_counters_by_expiry ON budget_counters (expires);
CREATE TABLE IF NOT EXISTS budget_reservations (
    key TEXT NOT NULL,
    id TEXT NOT NULL,
    amount REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (key, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS budget_reservations_by_id ON budget_reservations (id);
CREATE INDEX IF NOT EXISTS budget_reservations_by_expiry ON budget_reservations (expires);
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
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    record TEXT NOT NULL
);
"""


class SQLiteStore(Store):
    """Budgets, holds and audit in one SQLite file, over one connection."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.url = f"sqlite://{self.path}"
        self.lock = threading.Lock()
        self._durable = True  # the connection's synchronous level: FULL (True) or NORMAL
        try:
            # Approvals and the audit log: readable by their owner only (0700/0600).
            ensure_home(self.path.parent)
            ensure_private_file(self.path)
            self.conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(str(self.path), f"cannot open the guardrail store: {exc}",
                             "check SPANGUARD_HOME, SPANGUARD_STORE_URL or the sqlite:/// "
                             "path in [store] url") from exc
        self.budgets = SQLiteBudgets(self)
        self.holds = SQLiteHolds(self)
        self.audit = SQLiteAudit(self)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.conn.close()

    def query(self, sql: str, params: Sequence[Any] = (), *, what: str) -> list[Any]:
        """The rows of one statement, read under the lock (``what`` names it in errors)."""
        try:
            with self.lock:
                return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(str(self.path), f"{what} failed: {exc}") from exc

    def update(self, sql: str, params: Sequence[Any] = (), *, what: str,
               durable: bool = True) -> int:
        """Run one writing statement under the lock; the number of rows it changed."""
        try:
            with self.lock:
                self._sync(durable)
                return self.conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise StoreError(str(self.path), f"{what} failed: {exc}") from exc

    def transaction(self, body: Callable[[sqlite3.Connection], Any], *, what: str,
                    hint: str = "", durable: bool = True) -> Any:
        """``body(conn)`` inside ``BEGIN IMMEDIATE``: committed whole, or rolled back.

        ``durable=False`` commits without an fsync (see the module's "Durability").
        """
        with self.lock:
            conn = self.conn
            try:
                self._sync(durable)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = body(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise StoreError(str(self.path), f"{what} failed: {exc}", hint) from exc


    def _sync(self, durable: bool) -> None:
        """Set the connection's ``synchronous`` level for the next commit (lock held)."""
        if durable != self._durable:
            self.conn.execute("PRAGMA synchronous=FULL" if durable
                              else "PRAGMA synchronous=NORMAL")
            self._durable = durable


def _own_store(store: SQLiteStore | str | os.PathLike[str], timeout: float) -> SQLiteStore:
    return store if isinstance(store, SQLiteStore) else SQLiteStore(store, timeout)


_SUM = ("SELECT COALESCE(SUM(amount), 0) FROM budget_counters "
        "WHERE key = ? AND bucket > ? AND bucket <= ?")
_HELD = "SELECT COALESCE(SUM(amount), 0) FROM budget_reservations WHERE key = ?"
_HOLD = ("INSERT INTO budget_reservations (key, id, amount, expires) VALUES (?, ?, ?, ?) "
         "ON CONFLICT (key, id) DO UPDATE SET amount = amount + excluded.amount")
_DROP = "DELETE FROM budget_reservations WHERE id = ?"
_EXPIRE = "DELETE FROM budget_reservations WHERE expires <= ?"
_UPSERT = ("INSERT INTO budget_counters (key, bucket, amount, expires) VALUES (?, ?, ?, ?) "
           "ON CONFLICT (key, bucket) DO UPDATE SET amount = amount + excluded.amount, "
           "expires = max(expires, excluded.expires)")


class SQLiteBudgets(BudgetStore):
    """``store.budgets`` of a :class:`SQLiteStore` (0.1 name: ``SQLiteBudgetStore``).

    Built on its own from a path (0.1 style), it opens a private store for it.
    """

    def __init__(self, store: SQLiteStore | str | os.PathLike[str],
                 timeout: float = 30.0) -> None:
        self.store = _own_store(store, timeout)
        self.url = self.store.url
        self._ops = 0

    @property
    def path(self) -> Path:
        return self.store.path

    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        result: ChargeResult = self.store.transaction(
            lambda conn: self._charge(conn, charges, now, check=True),
            what="budget update", hint="nothing was charged; the step was refused",
            durable=False)
        return result

    def add(self, charges: Sequence[Charge], now: float) -> None:
        self.store.transaction(lambda conn: self._charge(conn, charges, now, check=False),
                               what="budget update", durable=False)

    def spent(self, key: str, bucket: int, span: int) -> float:
        [row] = self.store.query(_SUM, (key, bucket - span, bucket), what="budget read")
        return float(row[0])

    def reserve(self, reservation: Reservation, now: float) -> ChargeResult:
        def body(conn: sqlite3.Connection) -> ChargeResult:
            result = self._check(conn, reservation.charges, now)
            if result.admitted:
                conn.executemany(_HOLD, [(c.key, reservation.id, c.amount, reservation.expires)
                                         for c in reservation.charges])
            return result

        result: ChargeResult = self.store.transaction(
            body, what="budget reservation", hint="nothing was reserved; the step was refused")
        return result

    def settle(self, reservation: Reservation, amounts: Sequence[float], now: float) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.execute(_DROP, (reservation.id,))
            self._charge(conn, [c._replace(amount=a) for c, a
                                in zip(reservation.charges, amounts, strict=True)],
                         now, check=False)

        self.store.transaction(body, what="budget settlement")

    def release(self, reservation: Reservation, now: float) -> None:
        self.store.update(_DROP, (reservation.id,), what="budget release")

    def in_flight(self, key: str, now: float) -> float:
        [row] = self.store.query(
            "SELECT COALESCE(SUM(amount), 0) FROM budget_reservations "
            "WHERE key = ? AND expires > ?", (key, now), what="budget read")
        return float(row[0])

    def close(self) -> None:
        self.store.close()

    @staticmethod
    def _check(conn: sqlite3.Connection, charges: Sequence[Charge],
               now: float) -> ChargeResult:
        conn.execute(_EXPIRE, (now,))
        spent = []
        held = []
        for index, charge in enumerate(charges):
            total = float(conn.execute(
                _SUM, (charge.key, charge.bucket - charge.span, charge.bucket)).fetchone()[0])
            reserved = float(conn.execute(_HELD, (charge.key,)).fetchone()[0])
            spent.append(total)
            held.append(reserved)
            if charge.limit is not None and not fits(total + reserved, charge.amount,
                                                     charge.limit):
                return ChargeResult(False, tuple(spent), index, tuple(held))
        return ChargeResult(True, tuple(spent), None, tuple(held))

    def _charge(self, conn: sqlite3.Connection, charges: Sequence[Charge], now: float,
                check: bool) -> ChargeResult:
        result = ChargeResult(True, ())
        if check:
            result = self._check(conn, charges, now)
            if not result.admitted:
                return result
        conn.executemany(_UPSERT, [(c.key, c.bucket, c.amount, now + c.ttl) for c in charges])
        for charge in charges:
            if charge.span > 1:
                conn.execute("DELETE FROM budget_counters WHERE key = ? AND bucket <= ?",
                             (charge.key, charge.bucket - charge.span))
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            conn.execute("DELETE FROM budget_counters WHERE expires < ?", (now,))
        return result


class SQLiteHolds:
    """``store.holds`` of a :class:`SQLiteStore`: the CAS is one conditional UPDATE."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.url = store.url

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.store.query(sql, params, what="hold store query")

    def _update(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.store.update(sql, params, what="hold store update")

    def _records(self, rows: list[Any]) -> list[HoldRecord]:
        return [HoldRecord.from_json(json.loads(r[0])) for r in rows]

    def create(self, record: HoldRecord) -> None:
        self._update("INSERT INTO holds VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (record.id, record.tool, record.payload_hash, record.status,
                      record.created_at, record.expires_at, json.dumps(record.to_json())))

    def get(self, hold_id: str) -> HoldRecord | None:
        found = self._records(self._query("SELECT record FROM holds WHERE id = ?", (hold_id,)))
        return found[0] if found else None

    def matching(self, tool: str, payload_hash: str) -> list[HoldRecord]:
        return self._records(self._query(
            "SELECT record FROM holds WHERE tool = ? AND payload_hash = ? "
            "ORDER BY created_at DESC", (tool, payload_hash)))

    def list(self, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]:
        if status is None:
            return self._records(self._query(
                "SELECT record FROM holds ORDER BY created_at DESC LIMIT ?", (limit,)))
        return self._records(self._query(
            "SELECT record FROM holds WHERE status = ? ORDER BY created_at DESC LIMIT ?",
            (status, limit)))

    def transition(self, hold_id: str, expected: HoldStatus, new: HoldStatus,
                   now: float, **changes: Any) -> HoldRecord | None:
        current = self.get(hold_id)
        if current is None or not may_move(current, expected, new, now):
            return None
        updated = replace(current, status=new, **changes)
        guard_expiry = expected in ACTIVE and new != "expired"
        sql = ("UPDATE holds SET status = ?, record = ? WHERE id = ? AND status = ?"
               + (" AND expires_at > ?" if guard_expiry else ""))
        params: tuple[Any, ...] = (new, json.dumps(updated.to_json()), hold_id, expected)
        if guard_expiry:
            params += (now,)
        return updated if self._update(sql, params) == 1 else None

    def suspend(self, tool: str, reason: str) -> None:
        self._update("INSERT OR REPLACE INTO hold_suspensions VALUES (?, ?)", (tool, reason))

    def suspension(self, tool: str) -> str | None:
        rows = self._query("SELECT reason FROM hold_suspensions WHERE tool = ?", (tool,))
        return str(rows[0][0]) if rows else None

    def lift(self, tool: str) -> None:
        self._update("DELETE FROM hold_suspensions WHERE tool = ?", (tool,))


class SQLiteAudit:
    """``store.audit`` of a :class:`SQLiteStore`: the ``audit`` table.

    ``BEGIN IMMEDIATE`` makes read-last-then-insert atomic across processes, so two
    writers never fork the chain.
    """

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        def body(conn: sqlite3.Connection) -> AuditRecord:
            row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            record = make(row[0] + 1 if row else 1, row[1] if row else GENESIS)
            conn.execute("INSERT INTO audit VALUES (?, ?, ?)",
                         (record.seq, record.hash, json.dumps(record.to_json())))
            return record

        appended: AuditRecord = self.store.transaction(body, what="audit append")
        return appended

    def records(self) -> list[AuditRecord]:
        rows = self.store.query("SELECT record FROM audit ORDER BY seq", what="audit read")
        return [AuditRecord.from_json(json.loads(r[0])) for r in rows]
