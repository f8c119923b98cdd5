"""One store layer: one backend per URL serves budgets, holds and audit records."""

from __future__ import annotations

import gc
import multiprocessing
import sqlite3
import threading
import weakref
from multiprocessing.queues import Queue
from pathlib import Path

import pytest
import redis

from spanguard.errors import ConfigError
from spanguard.guardrails import HoldRules, ToolCall, open_store
from spanguard.guardrails.approvals import Approvals, HoldConflict
from spanguard.guardrails.audit import AuditLog, open_audit_log
from spanguard.guardrails.hold_store import open_hold_store
from spanguard.guardrails.holds import HoldGuard
from spanguard.guardrails.stores import (
    Charge,
    MemoryBudgetStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    open_budget_store,
    resolve_store_url,
)

KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://{request.node.name}"
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'guardrails.db'}"
    redis_url: str = request.getfixturevalue("redis_url")
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


def charge(key: str, amount: float, limit: float | None = None) -> Charge:
    return Charge(key, bucket=1, span=1, amount=amount, limit=limit, ttl=3600)


def test_one_open_store_serves_budgets_holds_and_audit(url: str) -> None:
    store = open_store(url)
    assert store.budgets.try_charge([charge("tenant", 5, 10)], now=0).admitted
    approvals = Approvals.over(store)
    hold = approvals.request(tool="pay", payload_hash="h", maker="alice", risk_tier="high",
                             reason="test", expires_after=60)
    approvals.approve(hold.id, "carol")
    # Every entry point that opens the same URL reaches the same store object.
    assert open_store(url) is store
    assert open_budget_store(url) is store.budgets
    assert open_hold_store(url) is store.holds
    assert open_audit_log(url).records() == store.audit.records()
    assert Approvals.open(url).get(hold.id).status == "approved"
    assert [r.event for r in store.audit.records()] == ["hold.created", "hold.approved"]
    assert store.budgets.spent("tenant", 1, 1) == 5


def test_sqlite_keeps_the_three_record_kinds_in_one_file(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    store = open_store(f"sqlite://{db}")
    store.budgets.add([charge("k", 1)], now=0)
    Approvals.over(store).request(tool="t", payload_hash="h", maker="m", risk_tier="high",
                                  reason="r", expires_after=60)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".db"] == ["one.db"]
    with sqlite3.connect(db) as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                  for table in ("budget_counters", "holds", "audit")]
    assert counts == [1, 1, 1]


def test_facets_share_one_connection_safely_under_threads(url: str) -> None:
    """Budget charges, hold decisions and audit appends from 8 threads on one store:
    no overspend, exactly one decision per hold, and an intact audit chain."""
    store = open_store(url)
    approvals = Approvals.over(store)
    holds = [approvals.request(tool="t", payload_hash=f"h{n}", maker="alice",
                               risk_tier="high", reason="r", expires_after=600).id
             for n in range(8)]
    barrier = threading.Barrier(8)
    admitted: list[bool] = []
    won: list[str] = []
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for hold_id in holds:
                admitted.append(store.budgets.try_charge([charge("t", 1, 50)], now=0).admitted)
                try:
                    decide = approvals.approve if worker % 2 else approvals.reject
                    decide(hold_id, f"checker-{worker}")
                    won.append(hold_id)
                except HoldConflict:
                    pass
        except BaseException as exc:  # surfaced below: a thread must not hide a failure
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert admitted.count(True) == 50 and len(admitted) == 64
    assert sorted(won) == sorted(holds)
    check = AuditLog(store.audit).verify()
    assert check.ok and check.records == 16  # 8 created + 8 decided


def test_every_memory_url_names_one_process_wide_store() -> None:
    assert open_store("memory://") is open_store("memory://")
    assert open_store("memory://a") is open_store("memory://a")
    assert open_store("memory://a") is not open_store("memory://b")
    open_store("memory://a").budgets.add([charge("k", 3)], now=0)
    assert open_budget_store("memory://a").spent("k", 1, 1) == 3
    assert open_store("memory://b").budgets.spent("k", 1, 1) == 0


def test_a_memory_store_built_in_code_is_private() -> None:
    mine = MemoryStore()
    mine.budgets.add([charge("private-k", 7)], now=0)
    HoldGuard(HoldRules(tools=("x",)), store=mine).check(ToolCall("x", {}), maker="alice")
    assert open_store("memory://").budgets.spent("private-k", 1, 1) == 0
    assert len(mine.holds.list()) == 1
    assert not any(h.tool == "x" for h in open_store("memory://").holds.list())
    assert MemoryStore().holds.list() == []
    legacy = MemoryBudgetStore()  # 0.1 style: a private store of its own
    legacy.add([charge("private-k", 1)], now=0)
    assert mine.budgets.spent("private-k", 1, 1) == 7 and legacy.spent("private-k", 1, 1) == 1


def test_stores_built_in_code_are_not_the_shared_one(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "s.db"
    assert SQLiteStore(path) is not open_store(f"sqlite://{path}")
    assert RedisStore(redis_url) is not open_store(redis_url)


def test_sqlite_urls_naming_one_file_share_one_store(tmp_path: Path) -> None:
    assert open_store(f"sqlite://{tmp_path}/a.db") is open_store(f"sqlite://{tmp_path}//a.db")
    assert open_store(f"sqlite://{tmp_path}/a.db") is not open_store(f"sqlite://{tmp_path}/b.db")


def test_a_closed_store_is_replaced_on_the_next_open(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'c.db'}"
    first = open_store(url)
    first.budgets.add([charge("k", 2)], now=0)
    first.close()
    second = open_store(url)
    assert second is not first and second.budgets.spent("k", 1, 1) == 2


def test_shared_stores_are_released_when_nothing_uses_them(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'w.db'}")
    watcher = weakref.ref(store)
    del store
    gc.collect()
    assert watcher() is None


def _open_in_child(url: str, parents: int, results: Queue[bool]) -> None:
    import spanguard.guardrails.stores.opener as opener

    inherited = any(id(store) == parents for store in opener._SHARED.values())
    reopened = opener.open_store(url)
    results.put(inherited and id(reopened) != parents)


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'f.db'}"
    parent = open_store(url)
    ctx = multiprocessing.get_context("fork")
    results: Queue[bool] = ctx.Queue()
    child = ctx.Process(target=_open_in_child, args=(url, id(parent), results))
    child.start()
    assert results.get(timeout=60) is True
    child.join(timeout=30)
    assert child.exitcode == 0


def test_store_url_comes_from_the_argument_then_the_environment_then_the_home(
        tmp_path: Path, spanguard_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_store_url() == f"sqlite://{spanguard_home.resolve() / 'guardrails.db'}"
    assert resolve_store_url(home=tmp_path) == f"sqlite://{tmp_path.resolve()}/guardrails.db"
    monkeypatch.setenv("SPANGUARD_STORE_URL", "memory://env")
    assert resolve_store_url() == "memory://env"
    assert resolve_store_url("memory://arg") == "memory://arg"
    assert open_store() is open_store("memory://env")


@pytest.mark.parametrize(("url", "message"), [
    ("postgres://db", "store url: unknown store scheme 'postgres' in url"),
    ("sqlite://relative.db", "store url: sqlite url needs an absolute path"),
    ("sqlite:///", "store url: sqlite url needs an absolute path"),
    ("no-scheme", "store url: url must look like scheme://"),
])
def test_bad_store_urls_are_refused_before_connecting(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        open_store(url)
    assert message in str(refused.value)


def test_a_bad_environment_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANGUARD_STORE_URL", "ftp://x")
    with pytest.raises(ConfigError, match="SPANGUARD_STORE_URL: unknown store scheme"):
        open_store()


def test_redis_errors_never_show_the_password() -> None:
    from tests.conftest import free_port

    store = RedisStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout=0.5)
    for attempt in (lambda: store.holds.get("x"), lambda: store.audit.records(),
                    lambda: store.budgets.spent("k", 1, 1)):
        with pytest.raises(Exception) as failed:
            attempt()
        assert "hunter2" not in str(failed.value) and ":***@" in str(failed.value)
