"""Budget stores: one atomic check-and-charge, in memory, SQLite and a real Redis."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from spanguard.errors import ConfigError
from spanguard.guardrails.stores import (
    BudgetStore,
    Charge,
    MemoryBudgetStore,
    RedisBudgetStore,
    SQLiteBudgetStore,
    open_budget_store,
    redact_url,
)
from tests.guardrails import _workers


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BudgetStore]:
    if request.param == "memory":
        opened: BudgetStore = open_budget_store("memory://")
    elif request.param == "sqlite":
        opened = open_budget_store(f"sqlite://{tmp_path / 'b.db'}")
    else:
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        opened = open_budget_store(url)
    yield opened
    opened.close()


def c(key: str, amount: float, limit: float | None, bucket: int = 100,
      span: int = 1) -> Charge:
    return Charge(key, bucket, span, amount, limit, ttl=3600)


def test_charges_until_the_limit_then_refuses_with_the_spend(store: BudgetStore) -> None:
    results = [store.try_charge([c("k", 40, 100)], now=0) for _ in range(3)]
    assert [r.admitted for r in results] == [True, True, False]
    assert results[2].spent == (80.0,) and results[2].refused == 0
    assert store.spent("k", 100, 1) == 80
    assert store.try_charge([c("k", 20, 100)], now=0).admitted
    assert not store.try_charge([c("k", 0, 100)], now=0).admitted  # full: nothing fits


def test_all_or_nothing_across_counters(store: BudgetStore) -> None:
    assert store.try_charge([c("a", 5, 10), c("b", 5, 6)], now=0).admitted
    refused = store.try_charge([c("a", 5, 10), c("b", 5, 6)], now=0)
    assert (refused.admitted, refused.refused) == (False, 1)
    assert store.spent("a", 100, 1) == 5  # the first counter was not charged either


def test_rolling_window_sums_only_its_buckets(store: BudgetStore) -> None:
    for bucket in (10, 11, 12):
        store.add([c("r", 1.5, None, bucket=bucket, span=3)], now=0)
    assert store.spent("r", 12, 3) == 4.5
    assert store.spent("r", 13, 3) == 3.0  # bucket 10 has left the window
    assert store.try_charge([c("r", 1, 4, bucket=14, span=3)], now=0).spent == (1.5,)
    # Later adds to buckets inside the window just summed (a settle of an older
    # reservation included) must show; adds outside it must not.
    store.add([c("r", 2, None, bucket=13, span=3), c("r", 7, None, bucket=11, span=3)], now=0)
    assert store.spent("r", 14, 3) == pytest.approx(1.5 + 2 + 1)


def test_add_settles_with_negative_amounts(store: BudgetStore) -> None:
    store.try_charge([c("s", 500, 1000)], now=0)
    store.add([c("s", -380, None)], now=0)
    assert store.spent("s", 100, 1) == pytest.approx(120)


def test_open_budget_store_by_url_env_and_default(tmp_path: Path, spanguard_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_budget_store("memory://"), MemoryBudgetStore)
    default = open_budget_store(None)
    assert isinstance(default, SQLiteBudgetStore)
    assert default.path == spanguard_home.resolve() / "guardrails.db"
    assert default.path.exists()
    monkeypatch.setenv("SPANGUARD_STORE_URL", f"sqlite://{tmp_path / 'env.db'}")
    from_env = open_budget_store(None)
    assert isinstance(from_env, SQLiteBudgetStore) and from_env.path == tmp_path / "env.db"
    monkeypatch.setenv("SPANGUARD_STORE_URL", "redis://127.0.0.1:1/0")
    assert isinstance(open_budget_store(None), RedisBudgetStore)  # connects lazily
    monkeypatch.setenv("SPANGUARD_STORE_URL", "postgres://db")
    with pytest.raises(ConfigError, match="SPANGUARD_STORE_URL: unknown store scheme"):
        open_budget_store(None)


def test_passwords_never_reach_messages() -> None:
    assert redact_url("redis://:hunter2@10.0.0.1:6380/1") == "redis://:***@10.0.0.1:6380/1"
    assert redact_url("redis://10.0.0.1:6380/1") == "redis://10.0.0.1:6380/1"


def four_processes(url: str) -> list[int]:
    """Four spawned interpreters, released together by a barrier, charge one tenant."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    workers = [ctx.Process(target=_workers.report, args=(results, url, n, barrier))
               for n in range(4)]
    for worker in workers:
        worker.start()
    admitted = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    return admitted


def test_four_processes_never_overspend_one_tenant_on_redis(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    admitted = four_processes(redis_url)
    assert sum(admitted) <= _workers.TENANT_LIMIT, admitted
    assert sum(admitted) >= _workers.TENANT_LIMIT * 0.95, admitted


def test_four_processes_never_overspend_one_tenant_on_sqlite(tmp_path: Path) -> None:
    admitted = four_processes(f"sqlite://{tmp_path / 'shared.db'}")
    assert sum(admitted) <= _workers.TENANT_LIMIT, admitted
    assert sum(admitted) >= _workers.TENANT_LIMIT * 0.95, admitted
