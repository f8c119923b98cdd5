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
from spanguard.guardrails.stores.contracts import (
    BudgetStore,
    Charge,
    ChargeResult,
    Reservation,
    Store,
)
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


# KEYS: three per counter: its hash of buckets (field = bucket), the hash of its
# reservations in flight (field = reservation id) and their expiry times (a sorted
# set). ARGV[1]: "check" (try_charge), "add", "reserve" or "settle"; ARGV[2]: now;
# ARGV[3]: the reservation id; ARGV[4]: when it expires. Then 5 values per counter:
# bucket, span, amount, limit ("" = none), ttl seconds. Every counter is checked
# first (pruning buckets that left the window and reservations that expired), then
# all of them are charged or reserved, or none: Redis runs the script alone.
_BUDGET = """
local function reply(admitted, refused, spent, held)
  local out = {admitted, refused}
  for _, v in ipairs(spent) do out[#out + 1] = v end
  for _, v in ipairs(held) do out[#out + 1] = v end
  return out
end
local mode, now, id, expires = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local check = mode == 'check' or mode == 'reserve'
local n = #KEYS / 3
local spent, held = {}, {}
for i = 1, n do
  local counter, reserved, expiry = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local o = 5 + (i - 1) * 5
  if mode == 'settle' then
    redis.call('HDEL', reserved, id)
    redis.call('ZREM', expiry, id)
  end
  if check then
    local bucket = tonumber(ARGV[o])
    local low = bucket - tonumber(ARGV[o + 1])
    local total = 0
    local fields = redis.call('HGETALL', counter)
    for j = 1, #fields, 2 do
      local b = tonumber(fields[j])
      if b <= low then
        redis.call('HDEL', counter, fields[j])
      elseif b <= bucket then
        total = total + tonumber(fields[j + 1])
      end
    end
    local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
    for _, expired in ipairs(gone) do
      redis.call('HDEL', reserved, expired)
    end
    if #gone > 0 then
      redis.call('ZREMRANGEBYSCORE', expiry, '-inf', now)
    end
    local inflight = 0
    for _, amount in ipairs(redis.call('HVALS', reserved)) do
      inflight = inflight + tonumber(amount)
    end
    spent[i], held[i] = tostring(total), tostring(inflight)
    if ARGV[o + 3] ~= '' then
      local limit = tonumber(ARGV[o + 3])
      local amount = tonumber(ARGV[o + 2])
      if total + inflight + amount > limit or total + inflight >= limit then
        return reply(0, i, spent, held)
      end
    end
  end
end
for i = 1, n do
  local counter, reserved, expiry = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local o = 5 + (i - 1) * 5
  if mode == 'reserve' then
    redis.call('HINCRBYFLOAT', reserved, id, ARGV[o + 2])
    redis.call('ZADD', expiry, expires, id)
    redis.call('EXPIRE', reserved, ARGV[o + 4])
    redis.call('EXPIRE', expiry, ARGV[o + 4])
  else
    redis.call('HINCRBYFLOAT', counter, ARGV[o], ARGV[o + 2])
    redis.call('EXPIRE', counter, ARGV[o + 4])
  end
end
return reply(1, 0, spent, held)
"""

# KEYS: the reservation hash and expiry set of each counter; ARGV[1]: the id.
_RELEASE = """
for i = 1, #KEYS, 2 do
  redis.call('HDEL', KEYS[i], ARGV[1])
  redis.call('ZREM', KEYS[i + 1], ARGV[1])
end
return 1
"""


class RedisBudgets(BudgetStore):
    """``store.budgets`` of a :class:`RedisStore` (0.1 name: ``RedisBudgetStore``).

    Built on its own from a URL (0.1 style), it opens a private store for it.
    """

    def __init__(self, store: RedisStore | str,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.store = store if isinstance(store, RedisStore) else RedisStore(store, timeout)
        self.url = self.store.url
        self._script = self.store.client.register_script(_BUDGET)
        self._release = self.store.client.register_script(_RELEASE)

    def try_charge(self, charges: Sequence[Charge], now: float) -> ChargeResult:
        return self._result(self._run("check", charges, now))

    def add(self, charges: Sequence[Charge], now: float) -> None:
        self._run("add", charges, now)

    def spent(self, key: str, bucket: int, span: int) -> float:
        values = self.store.call("budget read", self.store.client.hgetall, key)
        return sum(float(v) for b, v in values.items() if bucket - span < int(b) <= bucket)

    def reserve(self, reservation: Reservation, now: float) -> ChargeResult:
        # The reservation keys must outlive the reservation itself.
        ttl = max(0.0, reservation.expires - now)
        charges = [c._replace(ttl=max(c.ttl, ttl)) for c in reservation.charges]
        return self._result(self._run("reserve", charges, now, reservation))

    def settle(self, reservation: Reservation, amounts: Sequence[float], now: float) -> None:
        self._run("settle", [c._replace(amount=a) for c, a
                             in zip(reservation.charges, amounts, strict=True)],
                  now, reservation)

    def release(self, reservation: Reservation, now: float) -> None:
        keys = [k for c in reservation.charges for k in (_held(c.key), _expiry(c.key))]
        self.store.call("budget release", lambda: self._release(keys=keys,
                                                                args=[reservation.id]))

    def in_flight(self, key: str, now: float) -> float:
        client = self.store.client
        live = self.store.call("budget read", client.zrangebyscore, _expiry(key),
                               f"({now!r}", "+inf")
        if not live:
            return 0.0
        amounts = self.store.call("budget read", client.hmget, _held(key), live)
        return sum(float(a) for a in amounts if a is not None)

    def close(self) -> None:
        self.store.close()

    @staticmethod
    def _result(reply: list[Any]) -> ChargeResult:
        """(admitted, refused counter or 0, the spends checked, then what they held)."""
        values = [float(v) for v in reply[2:]]
        checked = len(values) // 2
        spent, held = tuple(values[:checked]), tuple(values[checked:])
        if int(reply[0]) == 1:
            return ChargeResult(True, spent, None, held)
        return ChargeResult(False, spent, int(reply[1]) - 1, held)

    def _run(self, mode: str, charges: Sequence[Charge], now: float,
             reservation: Reservation | None = None) -> list[Any]:
        args: list[str | int | float] = [
            mode, repr(float(now)), reservation.id if reservation is not None else "",
            repr(float(reservation.expires)) if reservation is not None else ""]
        keys: list[str] = []
        for c in charges:
            keys += [c.key, _held(c.key), _expiry(c.key)]
            args += [c.bucket, c.span, repr(float(c.amount)),
                     "" if c.limit is None else repr(float(c.limit)), max(1, math.ceil(c.ttl))]
        reply = self.store.call(
            "budget update", lambda: self._script(keys=keys, args=args),
            hint="nothing was charged; the step was refused")
        return list(reply)


def _held(key: str) -> str:
    return key + ":reserved"


def _expiry(key: str) -> str:
    return key + ":reserved-until"


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
