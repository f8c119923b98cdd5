"""The embedded local trace store: one SQLite file under SPANGUARD_HOME.

It exists so that a developer sees their agent's span tree with no server at all
(``spanguard traces show``), and so that the CLI's report and the guardrails'
audit have a place to read from. Writes arrive in batches from an exporter
thread; reads come from the CLI. WAL mode lets both happen at once.

It also keeps where each paused run stopped (``paused_runs``: a keyed hash of the
thread, the paused root's span context), so that a run resumed hours later, in
another process, continues the paused run's trace (:mod:`spanguard.resume`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

from spanguard.errors import AmbiguousTraceId, StoreError, TraceNotFound
from spanguard.home import ensure_home

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind TEXT,
    start_time INTEGER NOT NULL,
    end_time INTEGER,
    status TEXT NOT NULL,
    status_message TEXT,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    service_name TEXT,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_time);
CREATE TABLE IF NOT EXISTS paused_runs (
    thread_key TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    trace_flags INTEGER NOT NULL,
    paused_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS paused_runs_by_age ON paused_runs (paused_at);
"""

DB_NAME = "traces.db"

# One row of the spans table, in column order; attributes and events as JSON text.
# Exporters build it straight from the SDK's span (spanguard.exporters.convert.to_row).
StoredRow = tuple[str, str, str | None, str, str, int, int | None, str, str | None,
                  str, str, str | None]
_COLUMNS = 12
# SQLite's default bound on ``?`` parameters per statement: 32766 since 3.32, 999 before.
_DEFAULT_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
# Rows per INSERT at most: 4096 rows is ~100 KB of SQL and covers the largest default batch.
_MAX_ROWS_PER_STATEMENT = 4096


@dataclass(frozen=True)
class StoredSpan:
    """A span as the local store keeps it; ids are lowercase hex."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_time: int
    end_time: int | None
    status: str
    status_message: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    service_name: str | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time) / 1e6

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_ms": self.duration_ms,
            "status": self.status,
            "status_message": self.status_message,
            "attributes": self.attributes,
            "events": self.events,
            "service_name": self.service_name,
        }


@dataclass(frozen=True)
class TraceSummary:
    trace_id: str
    root_name: str
    start_time: int
    end_time: int | None
    span_count: int
    error_count: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    status: str = "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "root_name": self.root_name,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "span_count": self.span_count,
            "error_count": self.error_count,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }


class TraceStore:
    """Thread-safe access to the SQLite trace database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            ensure_home(self.path.parent)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0,
                                         isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._rows_per_statement = _rows_per_statement(self._conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(str(self.path), f"cannot open ({exc})", _hint(exc)) from exc
        except OSError as exc:
            raise StoreError(str(self.path), f"cannot create ({exc.strerror or exc})",
                             "set SPANGUARD_HOME to a writable directory") from exc

    @classmethod
    def in_home(cls, home: str | Path) -> TraceStore:
        return cls(Path(home) / DB_NAME)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def write(self, rows: Iterable[StoredSpan]) -> int:
        encode = _JSON.encode
        return self.write_rows([
            (s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_time,
             s.end_time, s.status, s.status_message, encode(s.attributes), encode(s.events),
             s.service_name)
            for s in rows])

    def write_rows(self, rows: Sequence[StoredRow]) -> int:
        """Insert (or replace) rows atomically, with few statements of many rows each.

        Each statement inserts many rows (``VALUES (...), (...)``), so a batch costs
        one trip into SQLite, or a few, instead of one per row; SQLite runs without
        the GIL, and each return from it waits for the GIL behind a busy agent
        thread, so the fewer trips the better. Statements come in power-of-two
        sizes (a full batch of 512 or 2,048 rows is one statement; 1,234 rows are
        1,024 + 128 + 64 + 16 + 2), so a long-running process prepares and caches
        a dozen statements, not one per batch length. Several statements run in
        one transaction.
        """
        if not rows:
            return 0
        sizes = _statement_sizes(len(rows), self._rows_per_statement)
        try:
            with self._lock:
                try:
                    if len(sizes) > 1:
                        self._conn.execute("BEGIN")
                    start = 0
                    for size in sizes:
                        self._conn.execute(_insert_sql(size),
                                           list(chain.from_iterable(rows[start:start + size])))
                        start += size
                    if len(sizes) > 1:
                        self._conn.execute("COMMIT")
                except BaseException:  # whatever failed, nothing of the batch stays
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(str(self.path), f"write failed ({exc})", _hint(exc)) from exc
        return len(rows)

    def trace(self, trace_id: str) -> list[StoredSpan]:
        """Spans of one trace in start order; a unique prefix of the id is enough.

        The prefix is matched literally (``%`` and ``_`` are not wildcards); one
        matching more than one trace raises :class:`AmbiguousTraceId` naming them.
        """
        prefix = trace_id.strip().lower()
        ids = [row[0] for row in self._query(
            "SELECT trace_id FROM spans WHERE trace_id LIKE ? ESCAPE '\\' "
            "GROUP BY trace_id ORDER BY MIN(start_time) DESC", (_like_prefix(prefix),))]
        if not ids:
            raise TraceNotFound(prefix)
        if len(ids) > 1:
            raise AmbiguousTraceId(prefix, ids)
        rows = self._query("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_time, span_id",
                           (ids[0],))
        return [_row_to_span(row) for row in rows]

    def spans(self, since_ns: int = 0) -> list[StoredSpan]:
        rows = self._query("SELECT * FROM spans WHERE start_time >= ? ORDER BY start_time",
                           (since_ns,))
        return [_row_to_span(row) for row in rows]

    def traces(self, limit: int = 20) -> list[TraceSummary]:
        """Most recent traces first.

        A trace may hold several runs of one story: the first run and each run that
        resumed it (``spanguard.run.resumed``). Its status is the latest run's
        ``spanguard.run.status``; its tokens and cost add up every run's totals.
        """
        rows = self._query(
            """SELECT trace_id, MIN(start_time), MAX(end_time), COUNT(*),
                      SUM(status = 'ERROR')
               FROM spans GROUP BY trace_id ORDER BY MIN(start_time) DESC LIMIT ?""",
            (limit,))
        summaries = []
        for trace_id, start, end, count, errors in rows:
            runs = [_row_to_span(row) for row in self._query(
                """SELECT * FROM spans s WHERE trace_id = ? AND (parent_span_id IS NULL OR
                   json_extract(attributes, '$."spanguard.run.resumed"') = 1 OR
                   NOT EXISTS (SELECT 1 FROM spans p WHERE p.trace_id = s.trace_id
                                AND p.span_id = s.parent_span_id))
                   ORDER BY start_time, span_id""", (trace_id,))]
            root = runs[0] if runs else None
            segments = [root, *(s for s in runs[1:] if s.attributes.get(
                "spanguard.run.resumed") is True)] if root is not None else []
            costs = [s.attributes.get("spanguard.run.cost_usd") for s in segments]
            summaries.append(TraceSummary(
                trace_id=trace_id,
                root_name=root.name if root else "?",
                start_time=start, end_time=end, span_count=count, error_count=errors or 0,
                input_tokens=sum(int(s.attributes.get("spanguard.run.input_tokens", 0))
                                 for s in segments),
                output_tokens=sum(int(s.attributes.get("spanguard.run.output_tokens", 0))
                                  for s in segments),
                cost_usd=(sum(c for c in costs if isinstance(c, (int, float)))
                          if any(isinstance(c, (int, float)) for c in costs) else None),
                status=run_status(segments[-1]) if segments else "ok",
            ))
        return summaries

    def roots(self, *, trace_id: str | None = None, conversation_id: str | None = None,
              limit: int = 8) -> list[StoredSpan]:
        """Local root spans of one trace, or of the traces of one conversation (newest first).

        Used to link a later event (a user outcome) to the run it is about.
        """
        params: tuple[Any, ...]
        if trace_id is not None:
            where, params = "s.trace_id = ?", (trace_id.lower(),)
        elif conversation_id is not None:
            # Imported here: the vocabulary pulls in OpenTelemetry's metrics API,
            # which `spanguard traces list` (this module's main reader) never needs.
            from spanguard import semconv as sc

            where = "json_extract(s.attributes, ?) = ?"
            params = (f'$."{sc.GEN_AI_CONVERSATION_ID}"', conversation_id)
        else:
            return []
        rows = self._query(
            f"""SELECT * FROM spans s WHERE {where} AND (s.parent_span_id IS NULL OR
                NOT EXISTS (SELECT 1 FROM spans p WHERE p.trace_id = s.trace_id
                            AND p.span_id = s.parent_span_id))
                ORDER BY s.start_time DESC LIMIT ?""", (*params, limit))
        return [_row_to_span(row) for row in rows]

    # --- where paused runs stopped (spanguard.resume) ------------------------------
    def remember_pause(self, thread_key: str, trace_id: str, span_id: str, trace_flags: int,
                       *, max_entries: int, max_age_seconds: float) -> None:
        """Record a paused run (replacing the thread's previous one) and drop what is
        past the bounds: older than ``max_age_seconds``, or beyond the newest
        ``max_entries``.

        The time is read once the write lock is held: stamped before, a writer that
        waited for the lock while others recorded ``max_entries`` newer runs would
        evict its own record in the same transaction.
        """
        try:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                paused_at = time.time()
                self._conn.execute(
                    "INSERT OR REPLACE INTO paused_runs VALUES (?,?,?,?,?)",
                    (thread_key, trace_id, span_id, trace_flags, paused_at))
                self._conn.execute("DELETE FROM paused_runs WHERE paused_at < ?",
                                   (paused_at - max_age_seconds,))
                self._conn.execute(
                    """DELETE FROM paused_runs WHERE thread_key NOT IN (SELECT thread_key
                       FROM paused_runs ORDER BY paused_at DESC LIMIT ?)""", (max_entries,))
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with self._lock, contextlib.suppress(sqlite3.Error):  # closed: nothing to undo
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            raise StoreError(str(self.path), f"write failed ({exc})", _hint(exc)) from exc

    def paused_run(self, thread_key: str) -> tuple[str, str, int, float] | None:
        """``(trace_id, span_id, trace_flags, paused_at)`` of the thread's paused run."""
        rows = self._query("SELECT trace_id, span_id, trace_flags, paused_at FROM paused_runs "
                           "WHERE thread_key = ?", (thread_key,))
        if not rows:
            return None
        trace_id, span_id, flags, paused_at = rows[0]
        return str(trace_id), str(span_id), int(flags), float(paused_at)

    def forget_pause(self, thread_key: str) -> None:
        try:
            with self._lock:
                self._conn.execute("DELETE FROM paused_runs WHERE thread_key = ?",
                                   (thread_key,))
        except sqlite3.Error as exc:
            raise StoreError(str(self.path), f"write failed ({exc})", _hint(exc)) from exc

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return list(self._conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:  # DatabaseError, or ProgrammingError once closed
            raise StoreError(str(self.path), f"read failed ({exc})", _hint(exc)) from exc


# Compact JSON; a value JSON cannot hold is stored as its str() (OTel attributes
# are all JSON values; a StoredSpan built by hand may hold anything).
_JSON = json.JSONEncoder(default=str, separators=(",", ":"))


@lru_cache(maxsize=32)
def _insert_sql(rows: int) -> str:
    placeholders = "(" + ",".join("?" * _COLUMNS) + ")"
    return "INSERT OR REPLACE INTO spans VALUES " + ",".join([placeholders] * rows)


def _statement_sizes(count: int, largest: int) -> list[int]:
    """``count`` as full statements of ``largest`` rows, then the rest's powers of two."""
    sizes = [largest] * (count // largest)
    rest = count % largest
    size = largest
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size //= 2
    return sizes


def _rows_per_statement(conn: sqlite3.Connection) -> int:
    """The largest power of two of rows a statement may bind, at most 4096."""
    getlimit = getattr(conn, "getlimit", None)  # Python 3.11+
    variables = (int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)) if getlimit is not None
                 else _DEFAULT_MAX_VARIABLES)
    rows = max(min(variables // _COLUMNS, _MAX_ROWS_PER_STATEMENT), 1)
    return 1 << (rows.bit_length() - 1)


def run_status(root: StoredSpan) -> str:
    """How the run that ``root`` heads ended: its ``spanguard.run.status``, else (spans
    written before the attribute existed, or by other tracers) ERROR -> ``error``."""
    status = root.attributes.get("spanguard.run.status")
    if isinstance(status, str):
        return status
    return "error" if root.status == "ERROR" else "ok"


def _row_to_span(row: tuple[Any, ...]) -> StoredSpan:
    return StoredSpan(
        trace_id=row[0], span_id=row[1], parent_span_id=row[2], name=row[3], kind=row[4],
        start_time=row[5], end_time=row[6], status=row[7], status_message=row[8],
        attributes=json.loads(row[9]), events=json.loads(row[10]), service_name=row[11],
    )


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with ``prefix`` taken literally."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _hint(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "not a database" in text or "malformed" in text:
        return "the file is corrupt: move it aside and spanguard will start a new one"
    if "locked" in text or "busy" in text:
        return "another process holds a lock on it: retry, or point SPANGUARD_HOME elsewhere"
    if "readonly" in text or "read-only" in text:
        return "the file is read-only: fix its permissions or set SPANGUARD_HOME"
    return "see the SQLite error above"
