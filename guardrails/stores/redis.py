"""The shared store: Redis, for budgets and holds that span machines.

One client per :class:`RedisStore` (its connection pool serves the three facets).
Atomicity comes from Redis: a budget check-and-charge and a hold's compare-and-set
are Lua scripts (Redis runs a script alone), an audit append is a WATCH/MULTI
transaction retried on conflict. The client library is an optional extra, and a
store that can hang forever on a dead server would turn "fail closed" into
"hang": the client gets timeouts. Messages name the URL without its password.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from spanguard.errors import ConfigError, StoreError
from spanguard.guardrails.stores.contracts import BudgetStore, Charge, ChargeResult, Store
from spanguard.guardrails.stores.records import (
    ACTIVE,
    GENESIS,
    AuditRecord,
    HoldRecord,
    HoldStatus,
    may_move,
)
from spanguard.guardrails.stores.urls import redact_url

DEFAULT_TIMEOUT_SECONDS = 5.0


class RedisStore(Store):
    """Budgets, holds and audit in one Redis database, over one client."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        try:
            import redis
        except ImportError as exc:
            raise ConfigError(redact_url(url), "a redis:// store needs the redis package",
                              "pip install 'spanguard[redis]'") from exc
        self.url = url
        # Any: the client's pipeline methods are untyped in redis-py.
        self.client: Any = redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)
        self.errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self.watch_error: type[Exception] = redis.WatchError
        self.budgets = RedisBudgets(self)
        self.holds = RedisHolds(self)
        self.audit = RedisAudit(self)

    def close(self) -> None:
        self.closed = True
        self.client.close()

    def call(self, what: str, fn: Callable[..., Any], *args: Any, hint: str = "") -> Any:
        """``fn(*args)`` with a Redis failure turned into a :class:`StoreError`."""
        try:
            return fn(*args)
        except self.errors as exc:
            raise StoreError(redact_url(self.url), f"{what} failed: {exc}", hint) from exc


# KEYS: one hash per counter (field = bucket). ARGV[1]: "1" to check limits.
# Then 5 values per counter: bucket, span, amount, limit ("" = none), ttl seconds.
# Checks every counter first (pruning buckets that left the window), then adds
# to all of them or to none: Redis runs the script atomically.
_CHARGE = """
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


class RedisBudgets(BudgetStore):
    """``store.budgets`` of a :class:`RedisStore` (0.1 name: ``RedisBudgetStore``).

    Built on its own from a URL (0.1 style), it opens a private store for it.
    """

    def __init__(self, store: RedisStore | str,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.store = store if isinstance(store, RedisStore) else RedisStore(store, timeout)
        self.url = self.store.url
        self._script = self.store.client.register_script(_CHARGE)

    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        reply = self._run(charges, check=True)
        spent = tuple(float(v) for v in reply[2:])
        if int(reply[0]) == 1:
            return ChargeResult(True, spent)
        return ChargeResult(False, spent, int(reply[1]) - 1)

    def add(self, charges: Sequence[Charge], now: float) -> None:
        self._run(charges, check=False)

    def spent(self, key: str, bucket: int, span: int) -> float:
        values = self.store.call("budget read", self.store.client.hgetall, key)
        return sum(float(v) for b, v in values.items() if bucket - span < int(b) <= bucket)

    def close(self) -> None:
        self.store.close()

    def _run(self, charges: Sequence[Charge], check: bool) -> list[Any]:
        args: list[str | int | float] = ["1" if check else "0"]
        for c in charges:
            args += [c.bucket, c.span, repr(float(c.amount)),
                     "" if c.limit is None else repr(float(c.limit)), max(1, math.ceil(c.ttl))]
        reply = self.store.call(
            "budget update", lambda: self._script(keys=[c.key for c in charges], args=args),
            hint="nothing was charged; the step was refused")
        return list(reply)


# KEYS[1] = hold hash key; ARGV = expected, new, now, guard_expiry, record json
_HOLD_CAS = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= ARGV[1] then return 0 end
if ARGV[4] == '1' and tonumber(redis.call('HGET', KEYS[1], 'expires_at')) <= tonumber(ARGV[3])
then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'record', ARGV[5])
return 1
"""


class RedisHolds:
    """``store.holds`` of a :class:`RedisStore`: one hash per hold; the CAS is Lua."""

    prefix = "spanguard:holds"

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.url = store.url
        self._redis = store.client
        self._cas = self._redis.register_script(_HOLD_CAS)

    def _key(self, hold_id: str) -> str:
        return f"{self.prefix}:{hold_id}"

    def _payload_key(self, tool: str, payload_hash: str) -> str:
        return f"{self.prefix}:by-payload:{tool}:{payload_hash}"

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.store.call("hold store command", fn, *args)

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
        if current is None or not may_move(current, expected, new, now):
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


class RedisAudit:
    """``store.audit`` of a :class:`RedisStore`: a list; WATCH makes read-last-then-push
    atomic (retried when another writer got in between)."""

    key = "spanguard:audit"

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        appended: AuditRecord = self.store.call("audit append", self._append, make)
        return appended

    def _append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        with self.store.client.pipeline() as pipe:
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
                except self.store.watch_error:
                    continue

    def records(self) -> list[AuditRecord]:
        rows = self.store.call("audit read", self.store.client.lrange, self.key, 0, -1)
        return [AuditRecord.from_json(json.loads(r)) for r in rows]
