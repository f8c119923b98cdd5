"""Code run in spawned processes by the multi-process budget tests (must be importable)."""

from __future__ import annotations

from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from spanguard.guardrails import (
    ModelCall,
    ModelUsage,
    Policy,
    StoreConfig,
    WindowBudget,
    WindowBudgetExceeded,
)
from spanguard.guardrails.enforcer import Enforcer

TENANT_LIMIT = 20_000
PER_CALL = 100


def charge_tenant(url: str, worker: int, barrier: Barrier) -> int:
    """Run model calls for tenant "acme" until its daily budget refuses; return the
    input tokens this process was admitted to spend."""
    policy = Policy(window_budgets=(WindowBudget("acme-daily", "tenant", "day", "calendar",
                                                 max_input_tokens=TENANT_LIMIT),),
                    store=StoreConfig(url))
    enforcer = Enforcer(policy)
    barrier.wait(timeout=60)
    admitted = 0
    run = enforcer.start_run(f"worker-{worker}", tenant="acme")
    while True:
        call = ModelCall("m", estimated_input_tokens=PER_CALL)
        try:
            enforcer.before_model_call(run, call, None)
        except WindowBudgetExceeded:
            return admitted
        enforcer.after_model_call(run, call, ModelUsage(PER_CALL, 0), None)
        admitted += PER_CALL


def report(results: Queue[int], url: str, worker: int, barrier: Barrier) -> None:
    results.put(charge_tenant(url, worker, barrier))
