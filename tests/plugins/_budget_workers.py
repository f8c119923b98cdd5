"""Code run in spawned processes by the multi-process LangGraph budget tests."""

from __future__ import annotations

import contextlib
import threading
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event

from spanguard.guardrails import GuardrailViolation, Policy
from spanguard.plugins.langchain import SpanguardCallbackHandler
from tests.plugins.budget_fakes import CountingChatModel, send_fan_out

TENANT_LIMIT = 5000
CALL_TOKENS = 1000
THREADS = 4
RUNS_PER_THREAD = 3


def tenant_policy(url: str, expiry: float = 900.0) -> Policy:
    return Policy.from_mapping({
        "window_budgets": {"acme_daily": {"scope": "tenant", "window": "day",
                                          "max_input_tokens": TENANT_LIMIT}},
        "store": {"url": url}, "usage": {"reservation_expiry": expiry}})


def tenant_runs(url: str, barrier: Barrier, results: Queue[tuple[int, int]]) -> None:
    """4 threads, each starting new runs of tenant "acme" (one 1,000-token call each)
    until the tenant's window refuses; reports (provider calls, provider tokens)."""
    model = CountingChatModel(max_latency=0.02)
    handler = SpanguardCallbackHandler(policy=tenant_policy(url))
    graph = send_fan_out(model, 1, CALL_TOKENS)
    barrier.wait(timeout=120)

    def runs() -> None:
        for _ in range(RUNS_PER_THREAD):
            with contextlib.suppress(GuardrailViolation):
                graph.invoke({"done": []}, {"callbacks": [handler],
                                            "metadata": {"tenant_id": "acme"}})

    pool = [threading.Thread(target=runs) for _ in range(THREADS)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    results.put((model.calls, model.tokens))


class _Stuck(CountingChatModel):
    """A provider that never answers: the process dies with the call in flight."""

    def _generate(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        self._receive(args[0])  # type: ignore[arg-type]
        threading.Event().wait()
        raise AssertionError("unreachable")


def crash_in_flight(url: str, reserved: Event) -> None:
    """Start a run whose one call is admitted (reserved) and never returns; the test
    kills this process while the reservation is held."""
    handler = SpanguardCallbackHandler(policy=tenant_policy(url))
    model = _Stuck()
    graph = send_fan_out(model, 1, TENANT_LIMIT)
    thread = threading.Thread(target=graph.invoke, args=({"done": []},), kwargs={"config": {
        "callbacks": [handler], "metadata": {"tenant_id": "acme"}}}, daemon=True)
    thread.start()
    while model.calls == 0:
        thread.join(0.01)
    reserved.set()
    threading.Event().wait()
