"""Loop budget figures: fit accuracy, overshoot / false stops, and the per-call cost.

    .venv/bin/python benchmarks/loop_budget_accuracy.py [--seeds 200]

1. Prediction error of T(N): synthetic runs with known S, u, r (tests/guardrails/
   synthetic.py, 1% and 2% iid per-call noise); the fit sees the first n calls;
   the table gives the median and 95th percentile of |predicted T(N)/actual - 1|.
2. Runaway agents (limit between T(5) and T(40), 300 calls available) and normal
   runs (end after 3-30 calls, limit = actual use + headroom x last call), driven
   through the real Enforcer: overshoot and false-stop counts over seeds.
3. Cost of one check, in microseconds (timeit, median of repeats, alternating with
   an empty-policy baseline measured in the same process).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.guardrails.synthetic

from opentelemetry.sdk.trace import TracerProvider

from spanguard.guardrails import LoopBudget, ModelCall, ModelUsage, Policy, RunState, WindowBudget
from spanguard.guardrails.budget import loop_fit
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.stores import MemoryBudgetStore
from spanguard.guardrails.window import WindowBudgetGuard
from tests.guardrails.synthetic import (
    Shape,
    drive,
    predicted_total,
    random_shape,
    steps,
    true_total,
)

SHAPES = [Shape(2000, 500), Shape(6000, 1500), Shape(1000, 800, 400, 2),
          Shape(3000, 600, 900, 3), Shape(4000, 300, 1200, 4)]


def accuracy_table(seeds: int) -> None:
    print("## 1. Prediction error of T(N) (% |predicted/actual - 1|, median / p95)\n")
    observed_counts = (2, 3, 4, 6, 10)
    for noise, total in ((0.01, 10), (0.01, 20), (0.02, 20)):
        print(f"noise {noise:.0%}, N = {total}")
        print("| S, u, r, repair every | " + " | ".join(f"n={n}" for n in observed_counts)
              + " |")
        print("|---|" + "---|" * len(observed_counts))
        for base in SHAPES:
            shape = Shape(base.s, base.u, base.r, base.retry_every, noise)
            cells = []
            for observed in observed_counts:
                errors = []
                for seed in range(seeds):
                    calls = steps(shape, total, random.Random(seed))
                    run = RunState(run_key=seed)
                    run.input_tokens = [c.input_tokens for c in calls[:observed]]
                    run.retry_flags = [c.is_retry for c in calls[:observed]]
                    actual = sum(c.input_tokens for c in calls)
                    predicted = predicted_total(loop_fit(run), shape, total)
                    errors.append(abs(predicted / actual - 1) * 100)
                errors.sort()
                cells.append(f"{statistics.median(errors):.1f} / "
                             f"{errors[int(0.95 * (len(errors) - 1))]:.1f}")
            label = f"{shape.s:.0f}, {shape.u:.0f}, {shape.r:.0f}, {shape.retry_every or '-'}"
            print(f"| {label} | " + " | ".join(cells) + " |")
        print()


def stops(seeds: int) -> None:
    print("## 2. Runaway overshoot and normal-run false stops (real Enforcer)\n")
    provider = TracerProvider()
    tracer = provider.get_tracer("bench")
    headrooms = (0.1, 0.25, 0.5, 1.0)
    print("| noise | runaways stopped | overshoot | spent/limit at stop (median, min) | "
          + " | ".join(f"false stops, headroom {h}x last call" for h in headrooms) + " |")
    print("|---|---|---|---|" + "---|" * len(headrooms))
    for noise in (0.01, 0.02, 0.05):
        stopped = overshoot = 0
        used = []
        false = dict.fromkeys(headrooms, 0)
        for seed in range(seeds):
            rng = random.Random(seed)
            shape = random_shape(rng, noise)
            limit = int(rng.uniform(true_total(shape, 5), true_total(shape, 40)))
            enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=limit)),
                                tracer_provider=provider)
            run = enforcer.start_run(seed)
            stopped += drive(enforcer, run, steps(shape, 300, rng), tracer) is not None
            overshoot += sum(run.input_tokens) > limit
            used.append(sum(run.input_tokens) / limit)
            calls = steps(shape, rng.randint(3, 30), rng)
            for headroom in headrooms:
                normal_limit = int(sum(c.input_tokens for c in calls)
                                   + headroom * calls[-1].input_tokens)
                normal = Enforcer(Policy(loop_budget=LoopBudget(
                    max_input_tokens=normal_limit)), tracer_provider=provider)
                false[headroom] += drive(normal, normal.start_run(seed), calls,
                                         tracer) is not None
        print(f"| {noise:.0%} | {stopped}/{seeds} | {overshoot} | "
              f"{statistics.median(used):.3f}, {min(used):.3f} | "
              + " | ".join(f"{false[h]}/{seeds}" for h in headrooms) + " |")
    print()


def median_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def cost() -> None:
    print("## 3. Cost of one check (microseconds per call, median of repeats)\n")
    provider = TracerProvider()  # recording spans, no exporter
    tracer = provider.get_tracer("bench")
    span = tracer.start_span("chat m")
    call = ModelCall("m")

    def observed_run(enforcer: Enforcer) -> RunState:
        run = enforcer.start_run("r", tenant="acme")
        for k in range(1, 11):
            run.input_tokens.append(2000 + 500 * k)
            run.retry_flags.append(False)
        run.output_tokens = 2000
        return run

    empty = Enforcer(Policy(), tracer_provider=provider)
    budget_policy = Policy(loop_budget=LoopBudget(max_input_tokens=10**12))
    budget = Enforcer(budget_policy, tracer_provider=provider)
    window = WindowBudget("t", "tenant", "day", max_total_tokens=10**15)
    memory = MemoryBudgetStore()
    windowed = Enforcer(budget_policy, tracer_provider=provider,
                        guards=[WindowBudgetGuard([window], memory)])
    window_guard = windowed.guards[0]
    budget_guard = budget.guards[0]
    runs = {name: observed_run(e) for name, e in
            (("empty", empty), ("budget", budget), ("window", windowed))}

    def settle() -> None:
        windowed.before_model_call(runs["window"], call, None)
        window_guard.after_model_call(runs["window"], call, ModelUsage(0, 0))

    cases: dict[str, Callable[[], object]] = {
        "baseline: Enforcer.before_model_call, empty policy":
            lambda: empty.before_model_call(runs["empty"], call, span),
        "LoopBudgetGuard.before_model_call (fit + predict + decision)":
            lambda: budget_guard.before_model_call(runs["budget"], call),
        "Enforcer.before_model_call, LoopBudget, allow event on a recording span":
            lambda: budget.before_model_call(runs["budget"], call, span),
        "WindowBudgetGuard check-and-charge, in-memory store":
            lambda: window_guard.before_model_call(runs["window"], call),
        "WindowBudgetGuard check-and-charge + settle, in-memory store": settle,
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(5):  # alternate cases so machine noise hits all of them alike
        for name, fn in cases.items():
            results[name].append(median_us(fn, number=2000, repeat=5))
    base = statistics.median(results[next(iter(cases))])
    print("| check | us per call | x baseline |")
    print("|---|---|---|")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"| {name} | {value:.2f} | {value / base:.1f} |")

    def whole_run() -> None:  # 30 calls, each absorbed and refit before the next check
        run = RunState(run_key="r")
        for k in range(1, 31):
            budget_guard.before_model_call(run, call)
            run.input_tokens.append(2000 + 500 * k)
            run.retry_flags.append(k % 4 == 0)

    per_call = median_us(whole_run, number=200, repeat=5) / 30
    print(f"| LoopBudgetGuard.before_model_call with a new call to absorb and refit "
          f"(mean over a 30-call run) | {per_call:.2f} | {per_call / base:.1f} |")
    span.end()
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    accuracy_table(args.seeds)
    stops(args.seeds)
    cost()


if __name__ == "__main__":
    main()
