"""Reviewer attention: approval latency on the hold, in a histogram, and a review floor.

A hold is created, "shown" and decided on an injected clock; the hold guard then
sees the decided hold when the maker re-makes the call. The floor flags (the
call runs, the finding is recorded) or refuses (the approval is voided, the call
does not run, and the next attempt asks for a new approval).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from spanguard import semconv as sc
from spanguard.guardrails import HoldPending, HoldRejected, HoldRules, Policy
from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.holds import HoldGuard
from spanguard.guardrails.review import ReviewBelowFloor, ReviewRules
from spanguard.guardrails.steps import ToolCall
from spanguard.guardrails.stores import MemoryStore
from spanguard.testing import capture
from tests.guardrails._holds_support import approvals_for, separate_connection
from tests.guardrails.test_holds_security import PAY_A, RULES, hold


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def setup(review: ReviewRules | None
          ) -> tuple[Enforcer, Approvals, Clock, InMemoryMetricReader]:
    clock = Clock()
    store = MemoryStore()
    approvals = Approvals.over(store, clock)
    guard = HoldGuard(HoldRules(tools=("pay",)), approvals=approvals, review=review)
    reader = InMemoryMetricReader()
    cap = capture()
    enforcer = Enforcer(Policy(), cap.tracer_provider, MeterProvider(metric_readers=[reader]),
                        guards=[guard], store=store)
    return enforcer, approvals, clock, reader


def held(enforcer: Enforcer, approvals: Approvals) -> str:
    run = enforcer.start_run("r", identity="maker")
    with pytest.raises(HoldPending) as pending:
        enforcer.before_tool_call(run, ToolCall("pay", {"amount": 5}), None)
    return pending.value.hold_id


def review_points(reader: InMemoryMetricReader) -> list[tuple[str, float]]:
    points = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == sc.METRIC_REVIEW_DURATION:
                    points += [(str(p.attributes[sc.REVIEW_DECISION]), p.sum)
                               for p in metric.data.data_points]
    return points


def test_the_latency_from_shown_to_decision_is_kept_on_the_hold_and_measured() -> None:
    enforcer, approvals, clock, reader = setup(None)
    hold_id = held(enforcer, approvals)
    clock.now += 30
    shown = clock.now
    clock.now += 12.5
    decided = approvals.approve(hold_id, "checker", shown_at=shown)
    assert decided.review_seconds == pytest.approx(12.5)
    assert approvals.audit.records()[-1].detail["review_seconds"] == pytest.approx(12.5)

    enforcer.before_tool_call(enforcer.start_run("r2", identity="maker"),
                              ToolCall("pay", {"amount": 5}), None)  # runs, once
    assert review_points(reader) == [("approved", pytest.approx(12.5))]


def test_without_shown_at_the_latency_runs_from_the_request() -> None:
    enforcer, approvals, clock, _ = setup(None)
    hold_id = held(enforcer, approvals)
    clock.now += 4
    assert approvals.reject(hold_id, "checker").review_seconds == pytest.approx(4)


def test_a_fast_approval_is_flagged_but_runs() -> None:
    enforcer, approvals, clock, _ = setup(ReviewRules(min_review_seconds=2.0))
    hold_id = held(enforcer, approvals)
    clock.now += 0.3
    approvals.approve(hold_id, "checker")
    decision = enforcer.guards[0].before_tool_call(enforcer.start_run("r", identity="maker"),
                                                    ToolCall("pay", {"amount": 5}))
    assert decision is not None and decision.kind == "allow"
    assert isinstance(decision.error, ReviewBelowFloor)
    assert decision.error.error_type == "review_below_floor"
    assert approvals.get(hold_id).status == "executed"


def test_a_fast_approval_is_voided_under_refuse_and_the_call_asks_again() -> None:
    enforcer, approvals, clock, _ = setup(ReviewRules(min_review_seconds=2.0,
                                                         action="refuse"))
    hold_id = held(enforcer, approvals)
    clock.now += 0.3
    approvals.approve(hold_id, "checker")
    run = enforcer.start_run("r", identity="maker")
    with pytest.raises(ReviewBelowFloor, match="voided"):
        enforcer.before_tool_call(run, ToolCall("pay", {"amount": 5}), None)
    assert approvals.get(hold_id).status == "void"
    assert [r.event for r in approvals.audit.records()][-1] == "hold.void"
    with pytest.raises(HoldPending) as again:  # a new request, the old one reported
        enforcer.before_tool_call(run, ToolCall("pay", {"amount": 5}), None)
    assert again.value.hold_id != hold_id
    assert again.value.previous is not None and again.value.previous.id == hold_id


def test_a_slow_enough_approval_passes_the_floor_and_a_rejection_is_measured_too() -> None:
    enforcer, approvals, clock, reader = setup(ReviewRules(min_review_seconds=2.0,
                                                              action="refuse"))
    hold_id = held(enforcer, approvals)
    clock.now += 3
    approvals.approve(hold_id, "checker")
    enforcer.before_tool_call(enforcer.start_run("r", identity="maker"),
                              ToolCall("pay", {"amount": 5}), None)  # ran: above the floor

    run = enforcer.start_run("r2", identity="maker")
    call = ToolCall("pay", {"amount": 9}, call_id="call-2")
    with pytest.raises(HoldPending) as pending:
        enforcer.before_tool_call(run, call, None)
    clock.now += 1
    approvals.reject(pending.value.hold_id, "checker", "not this month")
    with pytest.raises(HoldRejected):
        enforcer.before_tool_call(run, call, None)
    assert sorted(review_points(reader)) == [("approved", pytest.approx(3)),
                                             ("rejected", pytest.approx(1))]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("action", ["flag", "refuse"])
def test_a_fast_approval_is_spent_once_or_voided_once_under_concurrency(
        kind: str, action: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Six makers' processes (own connections) re-make the call at once: a flagged
    approval runs exactly once; a refused one never runs and is voided exactly once."""
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    first = approvals_for(kind, tmp_path, redis_url)
    review = ReviewRules(min_review_seconds=60.0, action=action)  # every approval is fast
    hold_id = hold(HoldGuard(RULES, approvals=first), PAY_A)
    first.approve(hold_id, "carol")
    guards = [HoldGuard(RULES, approvals=separate_connection(first), review=review)
              for _ in range(6)]
    barrier = threading.Barrier(len(guards))
    kinds: list[str] = []

    def run(guard: HoldGuard) -> None:
        barrier.wait()
        decision = guard.check(PAY_A, maker="alice")
        kinds.append(decision.kind if decision else "none")

    threads = [threading.Thread(target=run, args=(g,)) for g in guards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = [r.event for r in first.audit.records()]
    if action == "flag":
        assert kinds.count("allow") == 1, kinds
        assert events.count("hold.executed") == 1 and "hold.void" not in events
    else:
        assert "allow" not in kinds, kinds
        assert events.count("hold.void") == 1 and "hold.executed" not in events
        assert first.get(hold_id).status == "void"
    assert first.audit.verify().ok
