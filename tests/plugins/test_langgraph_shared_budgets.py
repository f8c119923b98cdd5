"""A tenant's window budget shared by processes, through real LangGraph runs.

Issue 14: 4 processes x 4 threads, each starting new runs of one tenant, admitted
16,000 tokens against a 5,000-token window, because the first call of a run
reserved 0. Each run's first call is now counted from its prompt and reserved
in the shared store (SQLite, and a real Redis) before the provider sees it. A
process that dies with a call in flight leaves a reservation that expires.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import redis

from spanguard.guardrails import GuardrailViolation, WindowBudgetExceeded
from spanguard.guardrails.stores import open_store
from spanguard.guardrails.window import WindowBudgetGuard
from spanguard.plugins.langchain import SpanguardCallbackHandler
from tests.plugins import _budget_workers as workers
from tests.plugins.budget_fakes import CountingChatModel, send_fan_out

PROCESSES = 4


@pytest.fixture(autouse=True)
def one_hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process hashes tenant ids with the same key (as one deployment does)."""
    monkeypatch.setenv("SPANGUARD_HASH_KEY", "5a" * 32)


def tenant_runs_in_processes(url: str) -> list[tuple[int, int]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    processes = [ctx.Process(target=workers.tenant_runs, args=(url, barrier, results))
                 for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    seen = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return seen


def assert_the_provider_saw_the_tenant_limit(seen: list[tuple[int, int]]) -> None:
    calls = sum(c for c, _ in seen)
    tokens = sum(t for _, t in seen)
    assert tokens <= workers.TENANT_LIMIT, seen
    # Every reservation is the provider's own count: exactly five calls fit, no fewer.
    assert (calls, tokens) == (5, workers.TENANT_LIMIT), seen


def test_four_processes_of_four_threads_never_overspend_a_tenant_on_sqlite(
        tmp_path: Path) -> None:
    assert_the_provider_saw_the_tenant_limit(
        tenant_runs_in_processes(f"sqlite://{tmp_path / 'shared.db'}"))


def test_four_processes_of_four_threads_never_overspend_a_tenant_on_redis(
        redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    assert_the_provider_saw_the_tenant_limit(tenant_runs_in_processes(redis_url))


def tenant_call(callbacks: SpanguardCallbackHandler) -> tuple[CountingChatModel,
                                                               GuardrailViolation | None]:
    model = CountingChatModel()
    try:
        send_fan_out(model, 1, workers.CALL_TOKENS).invoke(
            {"done": []}, {"callbacks": [callbacks], "metadata": {"tenant_id": "acme"}})
    except GuardrailViolation as refusal:
        return model, refusal
    return model, None


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_reservation_of_a_crashed_process_expires(request: pytest.FixtureRequest,
                                                      tmp_path: Path, backend: str) -> None:
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
    else:
        url = f"sqlite://{tmp_path / 'crash.db'}"
    ctx = multiprocessing.get_context("spawn")
    reserved = ctx.Event()
    crashed = ctx.Process(target=workers.crash_in_flight, args=(url, reserved))
    crashed.start()
    try:
        assert reserved.wait(timeout=120), "the call never reached the provider"
    finally:
        crashed.kill()  # SIGKILL: nothing settles or releases its reservation
        crashed.join(timeout=30)

    policy = workers.tenant_policy(url)
    model, refusal = tenant_call(SpanguardCallbackHandler(policy=policy))
    assert isinstance(refusal, WindowBudgetExceeded) and model.calls == 0
    assert (refusal.spent, refusal.reserved) == (0, workers.TENANT_LIMIT)
    assert "reserved in flight 5,000" in str(refusal)

    # reservation_expiry (900 s) later, the dead process's reservation no longer counts.
    later = WindowBudgetGuard(policy.window_budgets, open_store(url).budgets,
                              clock=lambda: time.time() + 901,
                              reservation_expiry=policy.usage.reservation_expiry)
    model, refusal = tenant_call(SpanguardCallbackHandler(guards=[later]))
    assert refusal is None and model.calls == 1
