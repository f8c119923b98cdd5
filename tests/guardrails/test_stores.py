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
    Reservation,
    SQLiteBudgetStore,
    open_budget_store,
    redact_url,
)
from tests.guardrails import _workers


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BudgetStore]:
    if request.param == "memory":  # a name of its own: memory:// is one store per process
        opened: BudgetStore = open_budget_store(f"memory://{request.node.name}")
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


def held(name: str, *charges: Charge, expires: float = 1000.0) -> Reservation:
    return Reservation(name, charges, expires)


def test_a_reservation_counts_against_the_limit_until_it_is_settled(store: BudgetStore) -> None:
    first = store.reserve(held("r1", c("k", 600, 1000)), now=0)
    assert first.admitted and (first.spent, first.reserved) == ((0.0,), (0.0,))
    # Nothing is spent yet, but 600 are in flight: another 600 do not fit.
    refused = store.reserve(held("r2", c("k", 600, 1000)), now=0)
    assert (refused.admitted, refused.refused, refused.spent, refused.reserved) == \
        (False, 0, (0.0,), (600.0,))
    assert (store.spent("k", 100, 1), store.in_flight("k", 0)) == (0, 600)
    store.settle(held("r1", c("k", 600, 1000)), [450], now=1)  # it used less
    assert (store.spent("k", 100, 1), store.in_flight("k", 1)) == (450, 0)
    assert store.reserve(held("r2", c("k", 550, 1000)), now=1).admitted


def test_a_released_reservation_charges_nothing(store: BudgetStore) -> None:
    reservation = held("r1", c("a", 5, 10), c("b", 1, 1))
    assert store.reserve(reservation, now=0).admitted
    assert not store.reserve(held("r2", c("b", 1, 1)), now=0).admitted
    store.release(reservation, now=0)
    assert (store.in_flight("a", 0), store.in_flight("b", 0)) == (0, 0)
    assert (store.spent("a", 100, 1), store.spent("b", 100, 1)) == (0, 0)
    assert store.reserve(held("r2", c("b", 1, 1)), now=0).admitted


def test_reservations_are_all_or_nothing(store: BudgetStore) -> None:
    assert store.reserve(held("r1", c("b", 6, 6)), now=0).admitted
    refused = store.reserve(held("r2", c("a", 5, 10), c("b", 1, 6)), now=0)
    assert (refused.admitted, refused.refused) == (False, 1)
    assert store.in_flight("a", 0) == 0  # the counter that fitted holds nothing either


def test_a_reservation_nobody_settles_stops_counting_when_it_expires(
        store: BudgetStore) -> None:
    assert store.reserve(held("crashed", c("k", 900, 1000), expires=60.0), now=0).admitted
    assert not store.reserve(held("r2", c("k", 900, 1000), expires=120.0), now=59).admitted
    assert store.in_flight("k", 59) == 900
    assert store.in_flight("k", 60) == 0
    later = store.reserve(held("r2", c("k", 900, 1000), expires=120.0), now=60)
    assert later.admitted and later.reserved == (0.0,)
    # A late settle of the expired reservation still charges what was really used.
    store.settle(held("crashed", c("k", 900, 1000), expires=60.0), [100], now=61)
    assert (store.spent("k", 100, 1), store.in_flight("k", 61)) == (100, 900)


def test_try_charge_counts_reservations_in_flight(store: BudgetStore) -> None:
    assert store.reserve(held("r1", c("k", 70, 100)), now=0).admitted
    refused = store.try_charge([c("k", 40, 100)], now=0)
    assert (refused.admitted, refused.reserved) == (False, (70.0,))
    assert store.try_charge([c("k", 30, 100)], now=0).admitted


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
