"""Where window budgets keep their counters: in memory, SQLite or Redis.

One small interface, :class:`BudgetStore`, with one operation that matters:
``try_charge`` checks every counter of a step against its limit and, only if
all of them fit, adds the amounts, as ONE atomic operation (a lock in memory,
``BEGIN IMMEDIATE`` in SQLite, a Lua script in Redis). Check-then-charge as two
calls would let concurrent processes each see room and together overspend.

A counter is a set of time buckets; a charge names the bucket "now" falls in
and how many buckets the window spans (1 for a calendar window, more for a
rolling one), so a store needs no notion of time beyond expiring old buckets.

The store is chosen by URL, the same way for every guard that needs one:
``memory://``, ``sqlite:///abs/path.db`` (the default is
``sqlite:///$SPANGUARD_HOME/guardrails.db``) or ``redis://host:port/db``; from
the policy's ``[store] url = ...`` or the ``SPANGUARD_STORE_URL`` environment
variable (see :func:`open_budget_store`).
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from spanguard.config import resolve_home
from spanguard.errors import ConfigError, StoreError
from spanguard.guardrails import _parse
from spanguard.guardrails._redis import connect
from spanguard.guardrails.policy import TABLE_PARSERS

STORE_URL_ENV = "SPANGUARD_STORE_URL"
DB_NAME = "guardrails.db"
_SCHEMES = ("memory", "sqlite", "redis", "rediss")
_SWEEP_EVERY = 512  # charges between sweeps of expired counters (memory, SQLite)


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
    """``spent`` holds each checked counter's window total before the charge."""

    admitted: bool
    spent: tuple[float, ...]
    refused: int | None = None


def fits(spent: float, amount: float, limit: float) -> bool:
    """The one admission rule every store applies (a full budget admits nothing)."""
    return spent + amount <= limit and spent < limit


class BudgetStore(ABC):
    """Counters shared by every run (and, for SQLite/Redis, every process) using it."""

    url: str

    @abstractmethod
    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        """All-or-nothing, atomic: add every amount only if every limit still fits."""

    @abstractmethod
    def add(self, charges: Sequence[Charge], now: float) -> None:
        """Add unconditionally (settling real usage after a call; amounts may be < 0)."""

    @abstractmethod
    def spent(self, key: str, bucket: int, span: int) -> float:
        """The window total of one counter."""

    def close(self) -> None:  # noqa: B027 - optional hook: the memory store holds nothing
        """Release connections; the default store has none to release."""


@dataclass(frozen=True)
class StoreConfig:
    """The policy's ``[store]`` table: which store shared guards use."""

    url: str

    def __post_init__(self) -> None:
        check_store_url(self.url, "store")


def check_store_url(url: str, source: str) -> str:
    """Refuse a URL no store understands, at load time, without connecting."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(source, f"url must look like scheme://..., got {url!r}",
                          "use memory://, sqlite:///abs/path.db or redis://host:port/db")
    scheme, rest = url.split("://", 1)
    if scheme not in _SCHEMES:
        raise ConfigError(source, f"unknown store scheme {scheme!r} in url",
                          "use memory://, sqlite:///abs/path.db or redis://host:port/db")
    if scheme == "sqlite" and not rest.startswith("/"):
        raise ConfigError(source, f"sqlite url needs an absolute path, got {url!r}",
                          "write sqlite:///abs/path.db (three slashes)")
    return url


def parse_store(table: Mapping[str, Any], source: str) -> StoreConfig:
    _parse.check_keys(table, ("url",), source)
    if "url" not in table:
        raise ConfigError(source, "url is required")
    return StoreConfig(url=check_store_url(_parse.text(table["url"], "url", source),
                                           f"{source} url"))


def default_store_url() -> str:
    return f"sqlite://{resolve_home().resolve() / DB_NAME}"


def open_budget_store(url: str | None = None) -> BudgetStore:
    """Open the store at ``url``, else ``SPANGUARD_STORE_URL``, else the SQLite default."""
    source = "store url"
    if url is None:
        url = os.environ.get(STORE_URL_ENV) or None
        source = STORE_URL_ENV
    if url is None:
        url, source = default_store_url(), "default store"
    check_store_url(url, source)
    scheme, rest = url.split("://", 1)
    if scheme == "memory":
        return MemoryBudgetStore()
    if scheme == "sqlite":
        return SQLiteBudgetStore(Path("/" + rest.lstrip("/")))
    return RedisBudgetStore(url)


def redact_url(url: str) -> str:
    """The URL without its password, for messages and spans."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class MemoryBudgetStore(BudgetStore):
    """One process, no persistence: tests, and single-process apps that restart freely."""

    url = "memory://"

    def __init__(self) -> None:
        self._counters: dict[str, dict[int, float]] = {}
        # key -> (bucket, span, total): the last window summed, kept current by
        # _apply, so a rolling window is not re-summed on every check.
        self._totals: dict[str, tuple[int, int, float]] = {}
        self._expires: dict[str, float] = {}
        self._lock = threading.Lock()
        self._ops = 0

    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        with self._lock:
            spent = []
            for index, charge in enumerate(charges):
                total = self._window(charge.key, charge.bucket, charge.span)
                spent.append(total)
                if charge.limit is not None and not fits(total, charge.amount, charge.limit):
                    return ChargeResult(False, tuple(spent), index)
            self._apply(charges, now)
            return ChargeResult(True, tuple(spent))

    def add(self, charges: Sequence[Charge], now: float) -> None:
        with self._lock:
            self._apply(charges, now)

    def spent(self, key: str, bucket: int, span: int) -> float:
        with self._lock:
            return self._window(key, bucket, span)

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

    def _apply(self, charges: Sequence[Charge], now: float) -> None:
        for key, bucket, span, amount, _, ttl in charges:
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
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            for key in [k for k, until in self._expires.items() if until < now]:
                del self._expires[key]
                self._counters.pop(key, None)
                self._totals.pop(key, None)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_counters (
    key TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    amount REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (key, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS budget_counters_by_expiry ON budget_counters (expires);
"""
_SUM = ("SELECT COALESCE(SUM(amount), 0) FROM budget_counters "
        "WHERE key = ? AND bucket > ? AND bucket <= ?")
_UPSERT = ("INSERT INTO budget_counters (key, bucket, amount, expires) VALUES (?, ?, ?, ?) "
           "ON CONFLICT (key, bucket) DO UPDATE SET amount = amount + excluded.amount, "
           "expires = max(expires, excluded.expires)")


class SQLiteBudgetStore(BudgetStore):
    """Embedded and shared by the processes of one machine (``BEGIN IMMEDIATE`` locks)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.url = f"sqlite://{path}"
        self._lock = threading.Lock()
        self._ops = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(str(path), f"cannot open the budget store: {exc}",
                             "check SPANGUARD_HOME or the sqlite:/// path in [store] url"
                             ) from exc

    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        return self._transaction(charges, now, check=True)

    def add(self, charges: Sequence[Charge], now: float) -> None:
        self._transaction(charges, now, check=False)

    def spent(self, key: str, bucket: int, span: int) -> float:
        with self._lock:
            try:
                return float(self._conn.execute(_SUM, (key, bucket - span, bucket))
                             .fetchone()[0])
            except sqlite3.Error as exc:
                raise StoreError(str(self.path), f"cannot read a budget: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self, charges: Sequence[Charge], now: float,
                     check: bool) -> ChargeResult:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = self._charge(conn, charges, now, check)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise StoreError(str(self.path), f"budget update failed: {exc}",
                                 "nothing was charged; the step was refused") from exc

    def _charge(self, conn: sqlite3.Connection, charges: Sequence[Charge], now: float,
                check: bool) -> ChargeResult:
        spent = []
        if check:
            for index, charge in enumerate(charges):
                total = float(conn.execute(
                    _SUM, (charge.key, charge.bucket - charge.span, charge.bucket)
                ).fetchone()[0])
                spent.append(total)
                if charge.limit is not None and not fits(total, charge.amount, charge.limit):
                    return ChargeResult(False, tuple(spent), index)
        conn.executemany(_UPSERT, [(c.key, c.bucket, c.amount, now + c.ttl) for c in charges])
        for charge in charges:
            if charge.span > 1:
                conn.execute("DELETE FROM budget_counters WHERE key = ? AND bucket <= ?",
                             (charge.key, charge.bucket - charge.span))
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            conn.execute("DELETE FROM budget_counters WHERE expires < ?", (now,))
        return ChargeResult(True, tuple(spent))


# KEYS: one hash per counter (field = bucket). ARGV[1]: "1" to check limits.
# Then 5 values per counter: bucket, span, amount, limit ("" = none), ttl seconds.
# Checks every counter first (pruning buckets that left the window), then adds
# to all of them or to none: Redis runs the script atomically.
_LUA = """
local check = ARGV[1] == '1'
local spent = {}
for i = 1, #KEYS do
  local o = 2 + (i - 1) * 5
  local bucket = tonumber(ARGV[o])
  local low = bucket - tonumber(ARGV[o + 1])
  local amount = tonumber(ARGV[o + 2])
  local total = 0
  local fields = redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    local b = tonumber(fields[j])
    if b <= low then
      redis.call('HDEL', KEYS[i], fields[j])
    elseif b <= bucket then
      total = total + tonumber(fields[j + 1])
    end
  end
  spent[i] = tostring(total)
  if check and ARGV[o + 3] ~= '' then
    local limit = tonumber(ARGV[o + 3])
    if total + amount > limit or total >= limit then
      return {0, i, unpack(spent)}
    end
  end
end
for i = 1, #KEYS do
  local o = 2 + (i - 1) * 5
  redis.call('HINCRBYFLOAT', KEYS[i], ARGV[o], ARGV[o + 2])
  redis.call('EXPIRE', KEYS[i], ARGV[o + 4])
end
return {1, 0, unpack(spent)}
"""


class RedisBudgetStore(BudgetStore):
    """Shared across processes and machines; check-and-charge is one Lua script."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self._redis, redis = connect(url, timeout=timeout)
        self._script = self._redis.register_script(_LUA)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)

    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        reply = self._run(charges, check=True)
        spent = tuple(float(v) for v in reply[2:])
        if int(reply[0]) == 1:
            return ChargeResult(True, spent)
        return ChargeResult(False, spent, int(reply[1]) - 1)

    def add(self, charges: Sequence[Charge], now: float) -> None:
        self._run(charges, check=False)

    def spent(self, key: str, bucket: int, span: int) -> float:
        try:
            values = self._redis.hgetall(key)
        except self._errors as exc:
            raise StoreError(redact_url(self.url), f"cannot read a budget: {exc}") from exc
        return sum(float(v) for b, v in values.items() if bucket - span < int(b) <= bucket)

    def close(self) -> None:
        self._redis.close()

    def _run(self, charges: Sequence[Charge], check: bool) -> list[Any]:
        args: list[str | int | float] = ["1" if check else "0"]
        for c in charges:
            args += [c.bucket, c.span, repr(float(c.amount)),
                     "" if c.limit is None else repr(float(c.limit)), max(1, math.ceil(c.ttl))]
        try:
            reply = self._script(keys=[c.key for c in charges], args=args)
        except self._errors as exc:
            raise StoreError(redact_url(self.url), f"budget update failed: {exc}",
                             "nothing was charged; the step was refused") from exc
        return list(reply)


TABLE_PARSERS["store"] = ("store", parse_store)
