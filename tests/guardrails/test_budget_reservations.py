"""Reserve before the call, settle after: budgets that hold when calls run at the same time.

Through the real Enforcer with real threads: one run's parallel calls, many runs
sharing a window budget, refusals that give back what earlier guards reserved,
errors and cancellations that release, reservations that expire.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from spanguard import semconv as sc
from spanguard.guardrails import (
    GuardrailViolation,
    LoopBudget,
    LoopBudgetExceeded,
    ModelCall,
    ModelUsage,
    Policy,
    RunState,
    ToolCall,
    ToolLoop,
    WindowBudget,
    WindowBudgetExceeded,
    estimate,
)
from spanguard.guardrails.budget import LoopBudgetGuard
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.inflight import in_flight
from spanguard.guardrails.stores import MemoryStore
from spanguard.guardrails.window import WindowBudgetGuard
from spanguard.testing import SpanCapture


def prompt_of(tokens: int) -> Callable[[], list[str]]:
    """A request the character estimate counts as ``tokens``: a token per symbol, and
    7 tokens of message and request overhead."""
    return lambda: ["!" * (tokens - 7)]


@pytest.fixture(autouse=True)
def character_estimate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """These tests count with the documented character estimate: prompt sizes are exact."""
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    estimate.reset()
    yield
    estimate.reset()


def hammer(enforcer: Enforcer, run: RunState, threads: int, calls_each: int,
           tokens: Callable[[random.Random], int], seed: int,
           latency: float = 0.002, overlap: bool = False) -> tuple[list[int], int]:
    """``threads`` threads of one run each make model calls at the same time; returns
    the input tokens the provider saw per admitted call, and how many were refused.
    ``overlap``: every admitted call stays in flight until every call was decided."""
    admitted: list[int] = []
    refused = 0
    decided = threading.Condition()
    start = threading.Barrier(threads)

    def all_decided() -> bool:
        return len(admitted) + refused == threads * calls_each

    def worker(index: int) -> None:
        nonlocal refused
        rng = random.Random(seed * 1000 + index)
        start.wait()
        for _ in range(calls_each):
            size = tokens(rng)
            call = ModelCall("m", prompt=prompt_of(size))
            try:
                enforcer.before_model_call(run, call, None)
            except GuardrailViolation:
                with decided:
                    refused += 1
                    decided.notify_all()
                continue
            with decided:
                admitted.append(size)  # the provider sees it
                decided.notify_all()
                if overlap:
                    decided.wait_for(all_decided, timeout=30)
            time.sleep(rng.uniform(0, latency))
            enforcer.after_model_call(run, call, ModelUsage(size, 0), None)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return admitted, refused


@pytest.mark.parametrize("seed", range(20))
def test_parallel_calls_of_one_run_never_pass_its_limits(cap: SpanCapture, seed: int) -> None:
    rng = random.Random(seed)
    max_calls = rng.randint(1, 12)
    max_tokens = rng.randint(2000, 20_000)
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=max_tokens,
                                                      max_model_calls=max_calls)),
                        tracer_provider=cap.tracer_provider)
    run = enforcer.start_run(seed)
    admitted, _ = hammer(enforcer, run, threads=rng.randint(2, 16), calls_each=4,
                               tokens=lambda r: r.randint(200, 1500), seed=seed)
    assert len(admitted) <= max_calls
    assert sum(admitted) <= max_tokens
    assert sum(run.input_tokens) == sum(admitted)
    assert in_flight(run).calls == 0  # every reservation was settled


def test_parallel_calls_that_fit_are_all_admitted(cap: SpanCapture) -> None:
    # 8 branches x 1,000 tokens = 8,000 under a limit of exactly 8,000: no false stop.
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=8000,
                                                      max_model_calls=8)),
                        tracer_provider=cap.tracer_provider)
    for seed in range(10):
        run = enforcer.start_run(seed)
        admitted, refused = hammer(enforcer, run, threads=8, calls_each=1,
                                   tokens=lambda r: 1000, seed=seed, overlap=True)
        assert (len(admitted), refused) == (8, 0)


def test_a_refusal_states_the_reservations_in_flight(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=3000)),
                        tracer_provider=cap.tracer_provider)
    run = enforcer.start_run("r")
    calls = [ModelCall("m", prompt=prompt_of(1000)) for _ in range(4)]
    for call in calls[:3]:
        enforcer.before_model_call(run, call, None)
    with pytest.raises(LoopBudgetExceeded) as refused:
        enforcer.before_model_call(run, calls[3], None)
    error = refused.value
    assert (error.limit, error.spent, error.reserved, error.prediction) == (3000, 0, 3000, 1000)
    assert ("model call 4 would bring input_tokens to 4,000 (spent 0 + reserved in flight "
            "3,000 + predicted 1,000), over the limit of 3,000") in str(error)
    assert "no model call of this run has completed yet" in str(error)


def test_a_later_guards_refusal_gives_back_what_earlier_guards_reserved(
        cap: SpanCapture) -> None:
    window = WindowBudget("tenant", "tenant", "day", max_model_calls=1)
    store = MemoryStore()
    enforcer = Enforcer(Policy(), tracer_provider=cap.tracer_provider, guards=[
        LoopBudgetGuard(LoopBudget(max_model_calls=1)),
        WindowBudgetGuard([window], store.budgets)])
    other = enforcer.start_run("other", tenant="acme")
    enforcer.before_model_call(other, ModelCall("m", prompt=prompt_of(10)), None)
    run = enforcer.start_run("r", tenant="acme")
    with pytest.raises(WindowBudgetExceeded):
        enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(10)), None)
    assert in_flight(run).calls == 0  # the loop budget's reservation was given back


def test_an_error_or_a_cancellation_gives_the_reservation_back(cap: SpanCapture) -> None:
    store = MemoryStore()
    window = WindowBudget("tenant", "tenant", "day", max_input_tokens=1000)
    enforcer = Enforcer(Policy(), tracer_provider=cap.tracer_provider, guards=[
        LoopBudgetGuard(LoopBudget(max_input_tokens=1000)),
        WindowBudgetGuard([window], store.budgets)])
    run = enforcer.start_run("r", tenant="acme")
    failed = ModelCall("m", prompt=prompt_of(900))
    enforcer.before_model_call(run, failed, None)
    with pytest.raises(LoopBudgetExceeded):
        enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(900)), None)
    enforcer.cancel_model_call(run, failed)  # the provider raised: nothing was used
    assert in_flight(run).calls == 0
    assert store.budgets.in_flight("spanguard:budget:tenant:tenant:acme:input_tokens",
                                   time.time()) == 0
    enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(900)), None)


def test_window_reservations_of_a_crashed_run_expire(cap: SpanCapture) -> None:
    now = [1_000_000.0]
    store = MemoryStore()
    window = WindowBudget("tenant", "tenant", "day", max_input_tokens=1000)
    guard = WindowBudgetGuard([window], store.budgets, clock=lambda: now[0],
                              reservation_expiry=600)
    enforcer = Enforcer(Policy(), tracer_provider=cap.tracer_provider, guards=[guard])
    crashed = enforcer.start_run("crashed", tenant="acme")
    enforcer.before_model_call(crashed, ModelCall("m", prompt=prompt_of(900)), None)
    # ... and its process died: nobody will settle that reservation.
    with pytest.raises(WindowBudgetExceeded) as refused:
        enforcer.before_model_call(enforcer.start_run("a", tenant="acme"),
                                   ModelCall("m", prompt=prompt_of(900)), None)
    assert refused.value.reserved == 900 and "reserved in flight 900" in str(refused.value)
    now[0] += 600
    enforcer.before_model_call(enforcer.start_run("b", tenant="acme"),
                               ModelCall("m", prompt=prompt_of(900)), None)


def test_run_reservations_never_settled_expire_too(cap: SpanCapture) -> None:
    now = [0.0]
    guard = LoopBudgetGuard(LoopBudget(max_model_calls=2), reservation_expiry=60,
                            clock=lambda: now[0])
    enforcer = Enforcer(Policy(), tracer_provider=cap.tracer_provider, guards=[guard])
    run = enforcer.start_run("r")
    for _ in range(2):  # two streams nobody reads to the end
        enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(10)), None)
    with pytest.raises(LoopBudgetExceeded):
        enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(10)), None)
    now[0] = 60.0
    enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(10)), None)


@pytest.mark.parametrize("seed", range(10))
def test_many_runs_sharing_a_window_never_overspend_it(cap: SpanCapture, seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.randint(3000, 30_000)
    window = WindowBudget("tenant", "tenant", "day", max_input_tokens=limit)
    enforcer = Enforcer(Policy(window_budgets=(window,)), tracer_provider=cap.tracer_provider,
                        guards=[WindowBudgetGuard([window], MemoryStore().budgets)])
    admitted: list[int] = []
    lock = threading.Lock()

    def one_run(index: int) -> None:
        run = enforcer.start_run(index, tenant="acme")  # a new run: nothing known yet
        size = random.Random(seed * 100 + index).randint(100, 2000)
        call = ModelCall("m", prompt=prompt_of(size))
        try:
            enforcer.before_model_call(run, call, None)
        except WindowBudgetExceeded:
            return
        with lock:
            admitted.append(size)
        time.sleep(0.001)
        enforcer.after_model_call(run, call, ModelUsage(size, 0), None)

    pool = [threading.Thread(target=one_run, args=(i,)) for i in range(40)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert sum(admitted) <= limit
    assert admitted, "a budget with room admits the first call"


def test_a_hidden_prompt_overhead_is_learned_as_an_offset_and_ratios_are_capped(
        cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=100_000)),
                        tracer_provider=cap.tracer_provider)
    run = enforcer.start_run("r")
    first = ModelCall("m", prompt=prompt_of(100))
    enforcer.before_model_call(run, first, None)
    enforcer.after_model_call(run, first, ModelUsage(400, 0), None)  # a 300-token preamble
    enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(100)), None)
    flight = in_flight(run)  # one call in flight: the next ones are counted from their text
    reserved = []
    for tokens in (100, 5000):
        before = flight.input
        enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(tokens)), None)
        reserved.append(flight.input - before)
    # 100 + the 300 offset for the small call; 5,000 x 2 (the cap, not x 4) for the large.
    assert reserved == [pytest.approx(400), pytest.approx(10_000)]


def test_a_provider_that_counts_more_than_the_estimate_is_learned(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=3000)),
                        tracer_provider=cap.tracer_provider)
    run = enforcer.start_run("r")
    first = ModelCall("m", prompt=prompt_of(500))
    enforcer.before_model_call(run, first, None)
    enforcer.after_model_call(run, first, ModelUsage(600, 0), None)  # 20% more than counted
    parallel = [ModelCall("m", prompt=prompt_of(500)) for _ in range(4)]
    enforcer.before_model_call(run, parallel[0], None)
    enforcer.before_model_call(run, parallel[1], None)  # concurrent: estimate x 1.2 = 600
    enforcer.before_model_call(run, parallel[2], None)
    with pytest.raises(LoopBudgetExceeded) as refused:  # 600 + 3 x 600 + 600 > 3000
        enforcer.before_model_call(run, parallel[3], None)
    assert refused.value.prediction == pytest.approx(600)


def parallel_tool_calls(enforcer: Enforcer, run: RunState,
                        arguments: list[dict[str, object]]) -> list[str]:
    """One thread per call, released together; what became of each call."""
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(arguments))

    def call_tool(args: dict[str, object]) -> None:
        start.wait()
        try:
            enforcer.before_tool_call(run, ToolCall("search", args), None)
            outcome = "ran"
        except GuardrailViolation as refusal:
            outcome = refusal.error_type
        with lock:
            outcomes.append(outcome)

    pool = [threading.Thread(target=call_tool, args=(args,)) for args in arguments]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return outcomes


def test_parallel_tool_calls_never_pass_the_tool_call_limit(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_tool_calls=5)),
                        tracer_provider=cap.tracer_provider)
    for seed in range(10):
        run = enforcer.start_run(seed)
        outcomes = parallel_tool_calls(enforcer, run, [{"q": i} for i in range(12)])
        assert outcomes.count("ran") == 5 == run.tool_calls  # refused calls are not counted
        assert outcomes.count("loop_budget_exceeded") == 7


def test_parallel_identical_tool_calls_are_seen_by_the_loop_detector(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(tool_loop=ToolLoop(identical_calls=3)),
                        tracer_provider=cap.tracer_provider)
    for seed in range(10):
        run = enforcer.start_run(seed)
        outcomes = parallel_tool_calls(enforcer, run, [{"q": "same"}] * 10)
        assert (outcomes.count("ran"), outcomes.count("tool_loop_detected")) == (2, 8)


def test_allow_events_show_what_is_in_flight(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(loop_budget=LoopBudget(max_input_tokens=10_000)),
                        tracer_provider=cap.tracer_provider)
    tracer = cap.tracer_provider.get_tracer("test")
    run = enforcer.start_run("r")
    with tracer.start_as_current_span("invoke_agent a"):
        with tracer.start_as_current_span("chat m") as first:
            enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(1000)), first)
        with tracer.start_as_current_span("chat m") as second:
            enforcer.before_model_call(run, ModelCall("m", prompt=prompt_of(2000)), second)
    first_event, second_event = (chat.span.events[0]["attributes"]
                                 for chat in cap.tree().find_all("chat m"))
    assert sc.GUARDRAIL_RESERVED not in first_event
    assert (second_event[sc.GUARDRAIL_RESERVED], second_event[sc.GUARDRAIL_PREDICTION]) == \
        (1000, 2000)
