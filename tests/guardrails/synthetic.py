"""Synthetic agent loops with known S, u, r: the ground truth for budget tests.

Call k re-sends the history: ``t_k = S + u*k + r*R_k`` (R_k: repair turns among
calls 1..k) times ``1 + noise`` (iid, relative sd ``noise``). ``drive`` runs the
calls through a real :class:`Enforcer`, one ``chat`` span per call, the way an
adapter does, and stops at the first refusal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from opentelemetry.trace import Tracer

from spanguard.guardrails import GuardrailViolation, ModelCall, ModelUsage, RunState
from spanguard.guardrails.budget import LoopFit
from spanguard.guardrails.enforcer import Enforcer


@dataclass(frozen=True)
class Shape:
    s: float
    u: float
    r: float = 0.0
    retry_every: int = 0  # a repair turn every n-th call (from call 2); 0: none
    noise: float = 0.01
    output: int = 200


@dataclass(frozen=True)
class Step:
    input_tokens: int
    output_tokens: int
    is_retry: bool


def repairs(shape: Shape, k: int) -> int:
    """R_k under the shape's deterministic schedule (calls 2, 2+n, 2+2n, ...)."""
    if not shape.retry_every or k < 2:
        return 0
    return (k - 2) // shape.retry_every + 1


def mean_tokens(shape: Shape, k: int) -> float:
    return shape.s + shape.u * k + shape.r * repairs(shape, k)


def true_total(shape: Shape, n: int) -> float:
    """Expected cumulative input of the first ``n`` calls (the T(N) to predict)."""
    return sum(mean_tokens(shape, k) for k in range(1, n + 1))


def steps(shape: Shape, count: int, rng: random.Random) -> list[Step]:
    out = []
    for k in range(1, count + 1):
        noisy = mean_tokens(shape, k) * (1.0 + rng.gauss(0.0, shape.noise))
        is_retry = repairs(shape, k) > repairs(shape, k - 1)
        out.append(Step(max(1, round(noisy)), shape.output, is_retry))
    return out


def random_shape(rng: random.Random, noise: float = 0.02) -> Shape:
    """A plausible agent: 0.5-8k static prompt, 100-2k growth per turn, some repairs."""
    return Shape(s=rng.uniform(500, 8000), u=rng.uniform(100, 2000),
                 r=rng.choice([0.0, rng.uniform(100, 1500)]),
                 retry_every=rng.choice([0, 3, 5]), noise=noise,
                 output=rng.randint(50, 600))


def drive(enforcer: Enforcer, run: RunState, calls: list[Step], tracer: Tracer,
          model: str = "fake-model") -> GuardrailViolation | None:
    """Feed ``calls`` through the enforcer until one is refused; return the refusal."""
    for step in calls:
        call = ModelCall(model, is_retry=step.is_retry)
        with tracer.start_as_current_span(f"chat {model}") as span:
            try:
                enforcer.before_model_call(run, call, span)
            except GuardrailViolation as refusal:
                return refusal
            enforcer.after_model_call(run, call, ModelUsage(step.input_tokens,
                                                            step.output_tokens), span)
    return None


def predicted_total(fit: LoopFit, shape: Shape, n: int) -> float:
    """The fit's T(N): calls seen so far as spent, later calls from the fitted S, u, r
    under the shape's repair schedule (the schedule is the caller's to know)."""
    return fit.spent + sum(fit.point(k, repairs(shape, k)) for k in range(fit.n + 1, n + 1))
