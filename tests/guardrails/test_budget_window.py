"""Window budgets per session/user/tenant: reserve before, settle after, clocks injected."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from spanguard import semconv as sc
from spanguard.guardrails import (
    BudgetStoreUnavailable,
    ModelCall,
    ModelUsage,
    Policy,
    RunState,
    StoreConfig,
    WindowBudget,
    WindowBudgetExceeded,
)
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.stores import MemoryBudgetStore, RedisBudgetStore, SQLiteBudgetStore
from spanguard.guardrails.window import WindowBudgetGuard
from spanguard.testing import SpanCapture
from tests.conftest import free_port


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


def setup(cap: SpanCapture, *budgets: WindowBudget,
          clock: Clock) -> tuple[Enforcer, MemoryBudgetStore]:
    store = MemoryBudgetStore()
    guard = WindowBudgetGuard(budgets, store, clock=clock)
    return Enforcer(Policy(window_budgets=budgets), tracer_provider=cap.tracer_provider,
                    guards=[guard]), store


def call(enforcer: Enforcer, run: RunState, tokens: int, estimate: int | None = None,
         output: int = 0) -> None:
    model_call = ModelCall("m", estimated_input_tokens=estimate)
    enforcer.before_model_call(run, model_call, None)
    enforcer.after_model_call(run, model_call, ModelUsage(tokens, output), None)


def test_calendar_day_resets_at_midnight_in_its_timezone(cap: SpanCapture) -> None:
    clock = Clock(utc(2025, 3, 1, 10, 0))
    budget = WindowBudget("daily", "tenant", "day", "calendar", max_model_calls=3,
                          timezone="Asia/Tokyo")
    enforcer, _ = setup(cap, budget, clock=clock)
    run = enforcer.start_run("r", tenant="acme")
    for _ in range(3):
        call(enforcer, run, 10)
    with pytest.raises(WindowBudgetExceeded) as refused:
        call(enforcer, run, 10)
    # Tokyo is UTC+9: its next midnight is 15:00 UTC.
    assert refused.value.resets_at == utc(2025, 3, 1, 15, 0).timestamp()
    assert "resets at 2025-03-01T15:00:00+00:00" in str(refused.value)
    clock.advance(4 * 3600 + 59 * 60)  # 14:59 UTC: still the same Tokyo day
    with pytest.raises(WindowBudgetExceeded):
        call(enforcer, run, 10)
    clock.advance(60)
    call(enforcer, run, 10)


def test_rolling_hour_forgets_spend_as_it_ages(cap: SpanCapture) -> None:
    clock = Clock(utc(2025, 3, 1, 10, 0))
    enforcer, _ = setup(cap, WindowBudget("hourly", "user", "hour", max_input_tokens=1000),
                        clock=clock)
    def one_call_run(tokens: int) -> None:  # separate runs of one user: no loop growth
        call(enforcer, enforcer.start_run(tokens, user="u1"), tokens, estimate=tokens)

    one_call_run(600)
    clock.advance(1800)
    one_call_run(300)
    with pytest.raises(WindowBudgetExceeded) as refused:
        one_call_run(300)
    assert (refused.value.spent, refused.value.limit) == (900, 1000)
    assert "leaves the window as it ages" in str(refused.value)
    clock.advance(1800)
    with pytest.raises(WindowBudgetExceeded):  # exactly an hour: not yet out of the window
        one_call_run(300)
    clock.advance(60)  # an hour plus one sub-bucket: the 600 have left
    one_call_run(300)


def test_reservation_is_settled_with_real_usage(cap: SpanCapture) -> None:
    clock = Clock(utc(2025, 3, 1))
    enforcer, store = setup(cap, WindowBudget("d", "session", "day", "calendar",
                                              max_total_tokens=10_000), clock=clock)
    run = enforcer.start_run("r", session="s1")
    model_call = ModelCall("m", estimated_input_tokens=4000)
    enforcer.before_model_call(run, model_call, None)
    key = "spanguard:budget:d:session:s1:total_tokens"
    bucket = WindowBudget("d", "session", "day", "calendar",
                          max_total_tokens=1).slot(clock())[0]
    # Reserved before the call: in flight, not spent.
    assert (store.spent(key, bucket, 1), store.in_flight(key, clock())) == (0, 4000)
    enforcer.after_model_call(run, model_call, ModelUsage(1500, 250), None)
    # Settled with what was really used; nothing is left in flight.
    assert (store.spent(key, bucket, 1), store.in_flight(key, clock())) == (1750, 0)


def test_scopes_are_separate_and_unidentified_runs_share_one_budget(cap: SpanCapture) -> None:
    clock = Clock(utc(2025, 3, 1))
    enforcer, _ = setup(cap, WindowBudget("s", "session", "day", max_model_calls=1),
                        clock=clock)
    call(enforcer, enforcer.start_run("a", session="s1"), 1)
    call(enforcer, enforcer.start_run("b", session="s2"), 1)
    call(enforcer, enforcer.start_run("c"), 1)
    with pytest.raises(WindowBudgetExceeded):
        call(enforcer, enforcer.start_run("d"), 1)


def test_tightest_of_several_budgets_refuses_and_nothing_is_charged(cap: SpanCapture) -> None:
    clock = Clock(utc(2025, 3, 1))
    tenant = WindowBudget("tenant", "tenant", "day", max_input_tokens=100_000)
    user = WindowBudget("user", "user", "hour", max_input_tokens=1_000)
    enforcer, store = setup(cap, tenant, user, clock=clock)
    run = enforcer.start_run("r", tenant="acme", user="bob")
    with pytest.raises(WindowBudgetExceeded) as refused:
        call(enforcer, run, 2000, estimate=2000)
    assert refused.value.budget == "user"
    bucket, span, _ = tenant.slot(clock())
    assert store.spent("spanguard:budget:tenant:tenant:acme:input_tokens", bucket, span) == 0


def test_decisions_are_on_the_span_tree(cap: SpanCapture) -> None:
    clock = Clock(utc(2025, 3, 1))
    enforcer, _ = setup(cap, WindowBudget("t", "tenant", "day", max_input_tokens=1500),
                        clock=clock)
    tracer = cap.tracer_provider.get_tracer("test")
    run = enforcer.start_run("r", tenant="acme")
    with tracer.start_as_current_span("invoke_agent a"):
        for _ in range(3):
            with tracer.start_as_current_span("chat m") as span:
                model_call = ModelCall("m", estimated_input_tokens=1000)
                try:
                    enforcer.before_model_call(run, model_call, span)
                except WindowBudgetExceeded:
                    continue
                enforcer.after_model_call(run, model_call, ModelUsage(700, 0), span)
    chats = cap.tree().find_all("chat m")
    allowed = chats[0].span.events[0]["attributes"]
    assert allowed[sc.GUARDRAIL_DECISION] == "allow"
    assert (allowed[sc.GUARDRAIL_LIMIT], allowed[sc.GUARDRAIL_SPEND],
            allowed[sc.GUARDRAIL_PREDICTION]) == (1500, 0, 1000)
    assert allowed[sc.BUDGET_NAME] == "t"
    denied = chats[1].find("guardrail window_budget").attributes
    assert denied[sc.GUARDRAIL_DECISION] == "deny"
    assert denied[sc.ERROR_TYPE] == "window_budget_exceeded"
    assert (denied[sc.GUARDRAIL_SPEND], denied[sc.GUARDRAIL_PREDICTION]) == (700, 1000)
    assert denied[sc.BUDGET_SCOPE] == "tenant"


def test_unreachable_store_fails_closed(cap: SpanCapture) -> None:
    store = RedisBudgetStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    budget = WindowBudget("t", "tenant", "day", max_model_calls=10)
    enforcer = Enforcer(Policy(), tracer_provider=cap.tracer_provider,
                        guards=[WindowBudgetGuard([budget], store)])
    with pytest.raises(BudgetStoreUnavailable, match="cannot be checked"):
        enforcer.before_model_call(enforcer.start_run("r"), ModelCall("m"), None)


def test_policy_builds_its_store_from_the_store_table(cap: SpanCapture,
                                                      spanguard_home: Path) -> None:
    budget = WindowBudget("t", "tenant", "day", max_model_calls=10)
    in_memory = Enforcer(Policy(window_budgets=(budget,), store=StoreConfig("memory://")))
    guard = in_memory.guards[0]
    assert isinstance(guard, WindowBudgetGuard)
    assert isinstance(guard.store, MemoryBudgetStore)
    default = Enforcer(Policy(window_budgets=(budget,))).guards[0]
    assert isinstance(default, WindowBudgetGuard)
    assert isinstance(default.store, SQLiteBudgetStore)
    assert (spanguard_home / "guardrails.db").exists()
