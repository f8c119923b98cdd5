"""The fit of t_k = S + u*k + r*R_k: exact recovery, fallbacks, and accuracy of T(N)."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanguard.guardrails import (
    LoopBudget,
    LoopBudgetExceeded,
    ModelCall,
    ModelUsage,
    Policy,
    RunState,
)
from spanguard.guardrails.budget import LoopFit, loop_fit
from spanguard.guardrails.enforcer import Enforcer
from spanguard.testing import SpanCapture
from tests.guardrails.synthetic import Shape, drive, predicted_total, steps


def observe(tokens: list[int], retries: list[bool] | None = None, output: int = 0) -> LoopFit:
    run = RunState(run_key="r", input_tokens=list(tokens),
                   retry_flags=list(retries or [False] * len(tokens)),
                   output_tokens=output * len(tokens))
    return loop_fit(run)


def test_noise_free_run_recovers_s_u_r_exactly() -> None:
    shape = Shape(s=3000, u=700, r=250, retry_every=3, noise=0.0)
    calls = steps(shape, 9, random.Random(0))
    fit = observe([c.input_tokens for c in calls], [c.is_retry for c in calls])
    assert (fit.s, fit.u, fit.r) == pytest.approx((3000, 700, 250), abs=1e-6)
    assert fit.sd == pytest.approx(0.0, abs=1e-3)


def test_no_retries_means_r_is_zero_not_a_guess() -> None:
    fit = observe([2500, 3000, 3500, 4000])
    assert fit.r == 0.0
    assert (fit.s, fit.u) == pytest.approx((2000, 500))


def test_only_retries_fold_r_into_u() -> None:
    # R_k = k - 1: DESIGN.md's T(N) case, where r cannot be told apart from u.
    shape = Shape(s=1000, u=400, r=300, retry_every=1, noise=0.0)
    calls = steps(shape, 5, random.Random(0))
    fit = observe([c.input_tokens for c in calls], [c.is_retry for c in calls])
    assert fit.r == 0.0
    assert fit.u == pytest.approx(700)
    assert fit.point(6, 5) == pytest.approx(shape.s + shape.u * 6 + shape.r * 5)


def test_fallbacks_with_zero_one_and_two_calls() -> None:
    assert LoopFit().next_input(False, 3.0, 0.0) == 0.0
    one = observe([1000], output=300)  # the next call re-sends the reply
    assert one.next_input(False, 3.0, 0.0) == pytest.approx(1300)
    two = observe([1000, 1600])
    assert two.sd is None
    assert two.next_input(False, 3.0, 0.0) == pytest.approx(2200)
    assert two.next_input(False, 3.0, 0.05) == pytest.approx(2200 * 1.05)


def test_negative_repair_growth_is_refit_without_r() -> None:
    fit = observe([1000, 1300, 2300, 3300], [False, True, False, False])  # repair grew less
    assert fit.r == 0.0


def test_running_sums_match_a_fresh_fit_when_calls_arrive_one_by_one() -> None:
    calls = steps(Shape(2000, 600, 400, 2, noise=0.02), 12, random.Random(5))
    run = RunState(run_key="r")
    fit = loop_fit(run)
    for call in calls:
        run.input_tokens.append(call.input_tokens)
        run.retry_flags.append(call.is_retry)
        fit = loop_fit(run)
    fresh = observe([c.input_tokens for c in calls], [c.is_retry for c in calls])
    assert (fit.s, fit.u, fit.r, fit.sd) == pytest.approx((fresh.s, fresh.u, fresh.r, fresh.sd))


SHAPES = [Shape(2000, 500), Shape(6000, 1500), Shape(1000, 800, 400, 2),
          Shape(3000, 600, 900, 3), Shape(4000, 300, 1200, 4)]


def errors_after(cap: SpanCapture, shape: Shape, observed: int, total_calls: int,
                 seeds: int) -> list[float]:
    """|predicted T(N) / actual T(N) - 1| in %, fitting on the first ``observed`` calls
    driven through the real Enforcer."""
    tracer = cap.tracer_provider.get_tracer("test")
    out = []
    for seed in range(seeds):
        calls = steps(shape, total_calls, random.Random(seed))
        enforcer = Enforcer(Policy(loop_budget=LoopBudget()),
                            tracer_provider=cap.tracer_provider)
        run = enforcer.start_run(seed)
        assert drive(enforcer, run, calls[:observed], tracer) is None
        actual = sum(c.input_tokens for c in calls)
        out.append(abs(predicted_total(loop_fit(run), shape, total_calls) / actual - 1) * 100)
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"S{s.s:.0f}-u{s.u:.0f}-r{s.r:.0f}")
def test_after_three_calls_T_at_step_10_is_within_5_percent(cap: SpanCapture,
                                                            shape: Shape) -> None:
    # 1% per-call noise. Three calls are three equations for three unknowns, so a
    # single unlucky draw can still miss: we require 90% of 100 seeds within 5%.
    errors = errors_after(cap, shape, observed=3, total_calls=10, seeds=100)
    within = sum(e <= 5.0 for e in errors)
    assert within >= 90, f"only {within}/100 within 5%: median {statistics.median(errors):.2f}%"
    assert statistics.median(errors) <= 2.5


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"S{s.s:.0f}-u{s.u:.0f}-r{s.r:.0f}")
def test_after_six_calls_T_at_step_20_is_always_within_5_percent(cap: SpanCapture,
                                                                shape: Shape) -> None:
    errors = errors_after(cap, shape, observed=6, total_calls=20, seeds=100)
    assert max(errors) <= 5.0


def test_a_reply_longer_than_its_prompt_never_gives_a_negative_intercept() -> None:
    # Issue 23: one call of 100 tokens with a 200-token reply used to fit S = -100.
    fit = observe([100], output=200)
    assert (fit.s, fit.u, fit.r) == (0.0, 200.0, 0.0)
    assert fit.next_input(False, 3.0, 0.0) >= 100 + 200  # still re-sends call 1 and its reply


def test_steep_growth_is_fit_with_a_non_negative_intercept() -> None:
    fit = observe([100, 1000, 1900])  # the straight line has S = -800
    assert fit.s == 0.0 and fit.u > 0 and fit.r == 0.0
    assert fit.sd is not None


def test_the_refusal_message_never_shows_a_negative_fit(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=2500)),
                        tracer_provider=cap.tracer_provider)
    run = enforcer.start_run("r")
    for tokens in (100, 1000):
        call = ModelCall("m")
        enforcer.before_model_call(run, call, None)
        enforcer.after_model_call(run, call, ModelUsage(tokens, 50), None)
    with pytest.raises(LoopBudgetExceeded) as refused:
        enforcer.before_model_call(run, ModelCall("m"), None)
    assert "S=0, u=" in str(refused.value) and "=-" not in str(refused.value)
    assert min(refused.value.s, refused.value.u, refused.value.r) >= 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200_000), st.booleans()), min_size=2, max_size=25))
def test_the_fit_is_the_best_non_negative_least_squares_fit(
        calls: list[tuple[int, bool]]) -> None:
    tokens = [t for t, _ in calls]
    retries = [r for _, r in calls]
    fit = observe(tokens, retries)
    theta = np.array([fit.s, fit.u, fit.r])
    assert (theta >= 0).all()
    # Karush-Kuhn-Tucker: no descent direction that keeps every parameter >= 0.
    repairs = np.cumsum(retries)
    design = np.column_stack([np.ones(len(tokens)), np.arange(1, len(tokens) + 1), repairs])
    gradient = design.T @ (design @ theta - np.array(tokens, dtype=float))
    scale = 1e-6 * (1 + np.abs(design.T @ np.array(tokens, dtype=float)).max())
    for value, slope in zip(theta, gradient, strict=True):
        assert slope >= -scale
        if value > 0:
            assert abs(slope) <= scale
