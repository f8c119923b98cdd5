"""LoopBudget through the real Enforcer: runaways stopped under the limit, normal
runs untouched, and every decision on the span tree."""

from __future__ import annotations

import random

import pytest

from spanguard import semconv as sc
from spanguard.guardrails import (
    GuardrailViolation,
    LoopBudget,
    LoopBudgetExceeded,
    ModelCall,
    ModelUsage,
    Policy,
    ToolCall,
)
from spanguard.guardrails.enforcer import Enforcer
from spanguard.testing import SpanCapture
from tests.guardrails.synthetic import Shape, Step, drive, random_shape, steps, true_total


def enforcer_for(cap: SpanCapture, **limits: object) -> Enforcer:
    return Enforcer(Policy(loop_budget=LoopBudget(**limits)),  # type: ignore[arg-type]
                    tracer_provider=cap.tracer_provider)


def run_root(cap: SpanCapture, enforcer: Enforcer, calls: list[Step],
             key: object = "run") -> tuple[GuardrailViolation | None, list[int]]:
    """One agent run under an ``invoke_agent`` root span; returns (refusal, inputs)."""
    tracer = cap.tracer_provider.get_tracer("test")
    run = enforcer.start_run(key)
    with tracer.start_as_current_span("invoke_agent fake"):
        refusal = drive(enforcer, run, calls, tracer)
    return refusal, list(run.input_tokens)


def test_runaway_agents_are_stopped_without_overshoot_in_100_seeds(cap: SpanCapture) -> None:
    stopped = overshoot = 0
    used = []
    for seed in range(100):
        rng = random.Random(seed)
        shape = random_shape(rng, noise=0.02)
        limit = int(rng.uniform(true_total(shape, 5), true_total(shape, 40)))
        enforcer = enforcer_for(cap, max_input_tokens=limit)
        refusal, inputs = run_root(cap, enforcer, steps(shape, 300, rng), seed)
        stopped += isinstance(refusal, LoopBudgetExceeded)
        overshoot += sum(inputs) > limit
        used.append(sum(inputs) / limit)
        cap.clear()
    assert stopped == 100
    assert overshoot == 0
    # Not stopped absurdly early either: the guard admits what fits.
    assert min(used) > 0.75


def test_normal_runs_under_their_limit_are_never_stopped(cap: SpanCapture) -> None:
    # A normal run ends by itself after N calls; its limit leaves at least half a
    # call of headroom above what it really used.
    for seed in range(100):
        rng = random.Random(1000 + seed)
        shape = random_shape(rng, noise=0.02)
        calls = steps(shape, rng.randint(3, 30), rng)
        limit = sum(c.input_tokens for c in calls) + calls[-1].input_tokens // 2
        refusal, inputs = run_root(cap, enforcer_for(cap, max_input_tokens=limit), calls, seed)
        assert refusal is None, f"seed {seed}: false stop {refusal}"
        assert len(inputs) == len(calls)
        cap.clear()


def test_refusal_states_limit_spend_prediction_and_fit(cap: SpanCapture) -> None:
    calls = steps(Shape(2000, 1000, noise=0.0, output=0), 50, random.Random(0))
    refusal, inputs = run_root(cap, enforcer_for(cap, max_input_tokens=60_000), calls)
    assert isinstance(refusal, LoopBudgetExceeded)
    # t_k = 2000 + 1000k. After 8 calls (3000..10000) 52,000 are spent; call 9 is
    # predicted at 11,000 + 5% margin = 11,550 and 63,550 > 60,000: refused.
    assert inputs == [3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000]
    assert refusal.metric == "input_tokens"
    assert refusal.limit == 60_000
    assert refusal.spent == 52_000
    assert refusal.prediction == pytest.approx(11_550)
    assert (refusal.s, refusal.u, refusal.r) == pytest.approx((2000, 1000, 0))
    assert refusal.step == 9
    message = str(refusal)
    for text in ("60,000", "52,000", "11,550", "S=2,000", "u=1,000", "r=0", "call 9",
                 "not sent"):
        assert text in message, (text, message)
    assert refusal.error_type == "loop_budget_exceeded"
    assert isinstance(refusal, GuardrailViolation)


def test_refusal_is_a_guardrail_span_and_allows_are_events(cap: SpanCapture) -> None:
    calls = steps(Shape(2000, 1000, noise=0.0), 50, random.Random(0))
    run_root(cap, enforcer_for(cap, max_input_tokens=60_000), calls)
    root = cap.tree()
    chats = root.find_all("chat fake-model")
    assert len(chats) == 9  # eight admitted, the ninth refused before the provider
    refused = chats[-1].find("guardrail loop_budget")
    assert refused.kind == "GUARDRAIL"
    attrs = refused.attributes
    assert attrs[sc.GUARDRAIL_DECISION] == "deny"
    assert attrs[sc.ERROR_TYPE] == "loop_budget_exceeded"
    assert "would bring input_tokens" in attrs[sc.GUARDRAIL_REASON]
    assert attrs[sc.GUARDRAIL_LIMIT] == 60_000
    assert attrs[sc.GUARDRAIL_SPEND] == 52_000
    assert attrs[sc.GUARDRAIL_PREDICTION] == pytest.approx(11_550)
    assert attrs[sc.BUDGET_FIT_U] == pytest.approx(1000)
    assert attrs[sc.BUDGET_STEP] == 9
    events = [e for chat in chats[:-1] for e in chat.span.events]
    assert len(events) == 8
    assert {e["attributes"][sc.GUARDRAIL_DECISION] for e in events} == {"allow"}
    last = events[-1]["attributes"]
    assert last[sc.GUARDRAIL_SPEND] == 42_000 and last[sc.GUARDRAIL_LIMIT] == 60_000
    assert last[sc.GUARDRAIL_PREDICTION] == pytest.approx(10_500)


def test_projected_breach_within_the_step_limit_is_reported_once(cap: SpanCapture) -> None:
    calls = steps(Shape(2000, 1000, noise=0.0, output=0), 20, random.Random(0))
    refusal, inputs = run_root(cap, enforcer_for(cap, max_input_tokens=100_000,
                                                 max_model_calls=20), calls)
    assert isinstance(refusal, LoopBudgetExceeded)
    reports = [e["attributes"] for s in cap.spans() for e in s.events
               if e["attributes"].get(sc.GUARDRAIL_DECISION) == "report"]
    assert len(reports) == 1
    # T(n) = 2000n + 1000 n(n+1)/2: T(11) = 88,000, T(12) = 102,000.
    assert reports[0][sc.BUDGET_PROJECTED_STEP] == 12
    assert reports[0][sc.BUDGET_PROJECTED_TOTAL] == pytest.approx(102_000)
    assert reports[0][sc.BUDGET_METRIC] == "input_tokens"
    assert reports[0][sc.BUDGET_STEP] == 4  # reported at the first call after three seen
    assert len(inputs) == 11  # without stop_on_projected_breach the run goes on until
    assert refusal.step == 12  # the next call itself would not fit


def test_stop_on_projected_breach_stops_at_the_first_confident_projection(
        cap: SpanCapture) -> None:
    calls = steps(Shape(2000, 1000, noise=0.0, output=0), 20, random.Random(0))
    refusal, inputs = run_root(cap, enforcer_for(cap, max_input_tokens=100_000,
                                                 max_model_calls=20,
                                                 stop_on_projected_breach=True), calls)
    assert isinstance(refusal, LoopBudgetExceeded)
    assert len(inputs) == 3  # the projection needs three calls
    assert refusal.projected_step == 12
    assert "projected to pass the limit of 100,000 at call 12" in str(refusal)


def test_no_report_when_the_run_fits_its_step_limit(cap: SpanCapture) -> None:
    calls = steps(Shape(2000, 1000, noise=0.0), 8, random.Random(0))
    refusal, _ = run_root(cap, enforcer_for(cap, max_input_tokens=100_000,
                                            max_model_calls=8,
                                            stop_on_projected_breach=True), calls)
    assert refusal is None
    kinds = {e["attributes"][sc.GUARDRAIL_DECISION] for s in cap.spans() for e in s.events}
    assert kinds == {"allow"}


def test_model_call_limit(cap: SpanCapture) -> None:
    refusal, inputs = run_root(cap, enforcer_for(cap, max_model_calls=4),
                               steps(Shape(100, 10), 10, random.Random(0)))
    assert isinstance(refusal, LoopBudgetExceeded)
    assert (refusal.metric, refusal.limit, refusal.spent, len(inputs)) == (
        "model_calls", 4, 4, 4)


def test_total_token_limit_counts_replies(cap: SpanCapture) -> None:
    calls = steps(Shape(1000, 0, noise=0.0, output=1000), 20, random.Random(0))
    refusal, inputs = run_root(cap, enforcer_for(cap, max_total_tokens=10_000), calls)
    assert isinstance(refusal, LoopBudgetExceeded) and refusal.metric == "total_tokens"
    assert len(inputs) == 4  # 4 x (1000 in + 1000 out) = 8000; a fifth would pass 10,000


def test_cost_limit_uses_the_runs_observed_price(cap: SpanCapture) -> None:
    enforcer = enforcer_for(cap, max_cost_usd=0.05)
    run = enforcer.start_run("r")
    spent = 0
    with pytest.raises(LoopBudgetExceeded) as refused:
        for _ in range(100):
            call = ModelCall("m")
            enforcer.before_model_call(run, call, None)
            enforcer.after_model_call(run, call, ModelUsage(1000, 0, cost_usd=0.01), None)
            spent += 1
    assert refused.value.metric == "cost_usd"
    assert run.cost_usd <= 0.05 and spent == 4  # a fifth 0.0105 (with margin) would pass


def test_caller_estimate_is_a_floor_for_the_prediction(cap: SpanCapture) -> None:
    enforcer = enforcer_for(cap, max_input_tokens=5000)
    run = enforcer.start_run("r")
    with pytest.raises(LoopBudgetExceeded) as refused:
        enforcer.before_model_call(run, ModelCall("m", estimated_input_tokens=6000), None)
    assert refused.value.prediction == 6000 and run.input_tokens == []


def test_tool_call_limit_per_run(cap: SpanCapture) -> None:
    enforcer = enforcer_for(cap, max_tool_calls=2)
    run = enforcer.start_run("r")
    for n in range(2):
        enforcer.before_tool_call(run, ToolCall("search", {"q": n}), None)
    with pytest.raises(LoopBudgetExceeded) as refused:
        enforcer.before_tool_call(run, ToolCall("search", {"q": 9}), None)
    assert (refused.value.metric, refused.value.limit) == ("tool_calls", 2)


def test_runs_are_independent(cap: SpanCapture) -> None:
    enforcer = enforcer_for(cap, max_model_calls=1)
    first, second = enforcer.start_run("a"), enforcer.start_run("b")
    for run in (first, second):
        enforcer.before_model_call(run, ModelCall("m"), None)
        enforcer.after_model_call(run, ModelCall("m"), ModelUsage(10, 1), None)
    with pytest.raises(LoopBudgetExceeded):
        enforcer.before_model_call(first, ModelCall("m"), None)
