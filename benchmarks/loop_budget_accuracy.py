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
4. Concurrency: parallel calls of one run (threads), runs sharing a window budget
   (threads; 4 processes x 4 threads on SQLite and on a real Redis when
   ``redis-server`` is installed): how often the provider saw more than a limit
   (target 0) and how much of the limit was used; then the cost of one reserve +
   settle in memory (target < 20 us), SQLite and Redis.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.guardrails.synthetic

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from spanguard.guardrails import (
    GuardrailViolation,
    LoopBudget,
    LoopBudgetExceeded,
    ModelCall,
    ModelUsage,
    Policy,
    RunState,
    StoreConfig,
    WindowBudget,
    estimate,
)
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.loopfit import loop_fit
from spanguard.guardrails.stores import (
    BudgetStore,
    Charge,
    MemoryBudgetStore,
    RedisBudgetStore,
    Reservation,
    SQLiteBudgetStore,
)
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
    both = Enforcer(budget_policy, tracer_provider=provider,
                    guards=[budget.guards[0], WindowBudgetGuard([window], MemoryBudgetStore())])
    window_guard = windowed.guards[0]
    budget_guard = budget.guards[0]
    runs = {name: observed_run(e) for name, e in
            (("empty", empty), ("budget", budget), ("window", windowed), ("both", both))}
    usage = ModelUsage(0, 0)

    def loop_check() -> None:
        budget_guard.before_model_call(runs["budget"], call)
        budget_guard.cancel_model_call(runs["budget"], call)

    def loop_settle() -> None:
        budget_guard.before_model_call(runs["budget"], call)
        budget_guard.after_model_call(runs["budget"], call, usage)

    def enforcer_check() -> None:
        budget.before_model_call(runs["budget"], call, span)
        budget.cancel_model_call(runs["budget"], call)

    def window_check() -> None:
        window_guard.before_model_call(runs["window"], call)
        window_guard.cancel_model_call(runs["window"], call)

    def window_settle() -> None:
        window_guard.before_model_call(runs["window"], call)
        window_guard.after_model_call(runs["window"], call, usage)

    def full(on: Span | None) -> Callable[[], None]:
        def cycle() -> None:  # what an adapter does per model call, with both budgets
            run = runs["both"]
            both.before_model_call(run, call, on)
            both.after_model_call(run, call, usage, on)
            del run.input_tokens[10:], run.retry_flags[10:]  # keep the run at 10 calls
        return cycle

    cases: dict[str, Callable[[], object]] = {
        "baseline: Enforcer.before_model_call, empty policy":
            lambda: empty.before_model_call(runs["empty"], call, span),
        "LoopBudgetGuard.before_model_call (fit + predict + reserve + decision) "
        "+ cancel_model_call": loop_check,
        "LoopBudgetGuard reserve + settle (before_model_call + after_model_call)": loop_settle,
        "Enforcer.before_model_call + cancel_model_call, LoopBudget, allow event on a "
        "recording span": enforcer_check,
        "WindowBudgetGuard reserve + release, in-memory store": window_check,
        "WindowBudgetGuard reserve + settle, in-memory store": window_settle,
        "Enforcer reserve + settle, LoopBudget and WindowBudget (memory), no span":
            full(None),
        "Enforcer reserve + settle, LoopBudget and WindowBudget (memory), recording span "
        "(2 allow events)": full(span),
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
            budget_guard.cancel_model_call(run, call)
            run.input_tokens.append(2000 + 500 * k)
            run.retry_flags.append(k % 4 == 0)

    per_call = median_us(whole_run, number=200, repeat=5) / 30
    print(f"| LoopBudgetGuard.before_model_call with a new call to absorb and refit "
          f"(mean over a 30-call run) | {per_call:.2f} | {per_call / base:.1f} |")
    span.end()
    print()


def _prompt(tokens: int) -> Callable[[], list[str]]:
    """A request the character estimate counts as ``tokens`` (a token per symbol, plus 7
    of overhead): section 4 measures the accounting, not the tokenizer, so it counts
    without tiktoken (:func:`_character_estimate_only`) and providers report that count."""
    return lambda: ["!" * (tokens - 7)]


def _character_estimate_only() -> None:
    sys.modules["tiktoken"] = None  # type: ignore[assignment]
    estimate.reset()


def parallel_run(seed: int) -> tuple[bool, float, int]:
    """2-16 threads of one run call at once until refused; (overshot, share of the
    binding limit used, refusals of a call that would have fitted at its real size)."""
    rng = random.Random(seed)
    limit, calls = rng.randint(2000, 20_000), rng.randint(1, 12)
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=limit,
                                                      max_model_calls=calls)))
    run = enforcer.start_run(seed)
    seen: list[int] = []
    early: list[int] = []
    lock = threading.Lock()
    threads = rng.randint(2, 16)
    start = threading.Barrier(threads)

    def worker(index: int) -> None:  # calls until refused: the demand exceeds the budget
        local = random.Random(seed * 100 + index)
        start.wait()
        while True:
            size = local.randint(200, 1500)
            call = ModelCall("m", prompt=_prompt(size))
            try:
                enforcer.before_model_call(run, call, None)
            except LoopBudgetExceeded as refusal:
                if refusal.metric == "input_tokens" and \
                        refusal.spent + refusal.reserved + size <= limit:
                    with lock:
                        early.append(size)
                return
            with lock:
                seen.append(size)
            time.sleep(local.uniform(0, 0.002))
            enforcer.after_model_call(run, call, ModelUsage(size, 0), None)

    _join([threading.Thread(target=worker, args=(i,)) for i in range(threads)])
    used = max(sum(seen) / limit, len(seen) / calls)
    return sum(seen) > limit or len(seen) > calls, used, len(early)


def shared_window(seed: int, store: BudgetStore, runs: int = 40) -> tuple[bool, float]:
    """``runs`` new runs of one tenant, one thread each, one call each; (overshot, used)."""
    rng = random.Random(seed)
    limit = rng.randint(3000, 30_000)
    window = WindowBudget(f"w{seed}", "tenant", "day", max_input_tokens=limit)
    enforcer = Enforcer(Policy(), guards=[WindowBudgetGuard([window], store)])
    seen: list[int] = []
    lock = threading.Lock()

    def one_run(index: int) -> None:
        run = enforcer.start_run(index, tenant=f"t{seed}")
        size = random.Random(seed * 100 + index).randint(100, 2000)
        call = ModelCall("m", prompt=_prompt(size))
        try:
            enforcer.before_model_call(run, call, None)
        except GuardrailViolation:
            return
        with lock:
            seen.append(size)
        time.sleep(0.001)
        enforcer.after_model_call(run, call, ModelUsage(size, 0), None)

    _join([threading.Thread(target=one_run, args=(i,)) for i in range(runs)])
    return sum(seen) > limit, sum(seen) / limit


PROCESS_LIMIT, PROCESS_CALL = 20_000, 700


def _process_worker(url: str, barrier: object, results: object) -> None:
    """4 threads of new runs of tenant "acme" until refused; puts the tokens admitted."""
    _character_estimate_only()
    window = WindowBudget("acme", "tenant", "day", max_input_tokens=PROCESS_LIMIT)
    enforcer = Enforcer(Policy(window_budgets=(window,), store=StoreConfig(url)))
    seen: list[int] = []
    lock = threading.Lock()
    barrier.wait(timeout=60)  # type: ignore[attr-defined]

    def runs() -> None:
        while True:
            run = enforcer.start_run(object(), tenant="acme")
            call = ModelCall("m", prompt=_prompt(PROCESS_CALL))
            try:
                enforcer.before_model_call(run, call, None)
            except GuardrailViolation:
                return
            with lock:
                seen.append(PROCESS_CALL)
            time.sleep(0.002)
            enforcer.after_model_call(run, call, ModelUsage(PROCESS_CALL, 0), None)

    _join([threading.Thread(target=runs) for _ in range(4)])
    results.put(sum(seen))  # type: ignore[attr-defined]


def processes(url: str) -> int:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_process_worker, args=(url, barrier, results))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    admitted = sum(results.get(timeout=300) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    return admitted


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A throw-away redis-server on a free loopback port, or None when not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", workdir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def store_cost(store: BudgetStore, number: int) -> tuple[float, float]:
    """Microseconds of one step on a two-counter budget, straight on the store:
    reserve + settle, and (the baseline, in the same run) 0.1's try_charge + add."""
    charges = (Charge("bench:input", 100, 61, 1000.0, 1e15, 86_400.0),
               Charge("bench:calls", 100, 61, 1.0, 1e15, 86_400.0))
    settle = [charges[0]._replace(amount=-20.0, limit=None)]
    ids = iter(range(10**9))

    def cycle() -> None:
        reservation = Reservation(f"bench-{next(ids)}", charges, 1e12)
        store.reserve(reservation, 1.0)
        store.settle(reservation, (980.0, 1.0), 1.0)

    def before() -> None:
        store.try_charge(charges, 1.0)
        store.add(settle, 1.0)

    new, old = [], []
    for _ in range(3):  # alternate, so machine noise hits both alike
        new.append(median_us(cycle, number=number, repeat=3))
        old.append(median_us(before, number=number, repeat=3))
    return statistics.median(new), statistics.median(old)


def concurrency(seeds: int) -> None:
    print("## 4. Concurrency: reserve before the call, settle after\n")
    _character_estimate_only()
    rows = []
    parallel = [parallel_run(seed) for seed in range(seeds)]
    rows.append(("one run, 2-16 threads calling until refused (loop budget: tokens and "
                 "calls; used = the binding limit's share)", [(o, u) for o, u, _ in parallel]))
    results = [shared_window(seed, MemoryBudgetStore()) for seed in range(seeds)]
    rows.append(("40 new runs of one tenant at once (window budget, memory store)", results))
    print("| case | runs | overshoot (target 0) | tokens used / limit (median, min) |")
    print("|---|---|---|---|")
    for name, outcome in rows:
        used = sorted(u for _, u in outcome)
        print(f"| {name} | {len(outcome)} | {sum(o for o, _ in outcome)} | "
              f"{statistics.median(used):.3f}, {used[0]:.3f} |")
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        urls = [("SQLite", f"sqlite://{tmp}/shared.db")]
        if redis_url is not None:
            urls.append(("Redis", redis_url))
        for name, url in urls:
            admitted = processes(url)
            print(f"| 4 processes x 4 threads, one tenant, {name} | 1 | "
                  f"{int(admitted > PROCESS_LIMIT)} | {admitted / PROCESS_LIMIT:.3f} |")
        early = [e for _, _, e in parallel]
        print(f"\nOne run, parallel calls: {sum(early)} refusal(s) of a call that would have "
              f"fitted at its real size, in {sum(e > 0 for e in early)} of {len(early)} runs "
              "(a call made while no other call of the run is in flight is predicted by the "
              "loop fit, with its margin, not from its text).\n")
        print("Cost of one reserve + settle (microseconds; straight on the store, then "
              "through the window guard)\n")
        print("| store | store.reserve + store.settle | 0.1: store.try_charge + store.add | "
              "WindowBudgetGuard reserve + settle |")
        print("|---|---|---|---|")
        backends: list[tuple[str, BudgetStore, int]] = [
            ("memory", MemoryBudgetStore(), 2000),
            ("SQLite", SQLiteBudgetStore(f"{tmp}/cost.db"), 30)]
        if redis_url is not None:
            backends.append(("Redis", RedisBudgetStore(redis_url), 200))
        for name, store, number in backends:
            new, old = store_cost(store, number)
            print(f"| {name} | {new:.1f} | {old:.1f} | {guard_cost(store, number):.1f} |")
            store.close()
        if redis_url is None:
            print("| Redis | skipped: redis-server is not installed | | |")
    print()


def guard_cost(store: BudgetStore, number: int) -> float:
    window = WindowBudget("cost", "tenant", "day", max_input_tokens=10**15,
                          max_model_calls=10**12)
    guard = WindowBudgetGuard([window], store)
    run = RunState(run_key="r", tenant="acme")
    run.input_tokens.extend([2000, 2500])
    run.retry_flags.extend([False, False])
    usage = ModelUsage(2600, 50)

    def cycle() -> None:
        call = ModelCall("m")
        guard.before_model_call(run, call)
        guard.after_model_call(run, call, usage)

    return median_us(cycle, number=number, repeat=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    accuracy_table(args.seeds)
    stops(args.seeds)
    cost()
    concurrency(args.seeds)


if __name__ == "__main__":
    main()
