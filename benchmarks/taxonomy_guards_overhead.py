"""Added cost per guarded call of the seed-004 taxonomy guards, against a same-run baseline.

Runs alternate (baseline, variant, ...) and medians are reported, because the
machine is shared. Each pair differs by one guard only:

1. ``before_tool_call``: a tool-loop policy vs the same plus ``[tool_arguments]``
   checking a valid call against a 3-property JSON Schema (the validator is
   compiled once per schema, as the MCP gate and HoldGate keep it);
2. ``admit_retrieval`` of 5 documents: an empty policy vs ``[tenant_scope]`` +
   ``[citations]`` (keyed-hash comparison per document, inventory update);
3. ``check_answer`` of a 600-character answer with 2 citations: empty policy vs
   ``[citations]``;
4. a flagged structured-output failure: ``classify_failure`` of a pydantic
   ``ValidationError`` plus the guard's decision and span (the cost of one
   failed attempt on top of the model call itself).

Usage: python benchmarks/taxonomy_guards_overhead.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, ValidationError

from spanguard.guardrails import Policy, ToolLoop
from spanguard.guardrails.citations import Citations
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.steps import Answer, Retrieval, RetrievedDocument, ToolCall
from spanguard.guardrails.stores import MemoryStore
from spanguard.guardrails.structured import (
    RepairRequested,
    StructuredOutput,
    StructuredResult,
    classify_failure,
)
from spanguard.guardrails.tenant_scope import TenantScope, TenantScopeGuard
from spanguard.guardrails.tool_arguments import ToolArguments, ToolSchema
from spanguard.hashing import KeyedHasher

SCHEMA = ToolSchema({"type": "object", "properties": {
    "amount": {"type": "number", "minimum": 0}, "to": {"type": "string"},
    "currency": {"enum": ["EUR", "USD"]}}, "required": ["amount", "to"]})
HASHER = KeyedHasher(b"k" * 32)
ANSWER = Answer(("Operating margins rose to 14.2% [source: doc_1] while costs fell "
                 "[source: doc_3]. ") * 5)


def enforcer(policy: Policy) -> Enforcer:
    built = Enforcer(policy, TracerProvider(), store=MemoryStore(), audit_sink=lambda *a: None)
    for guard in built.guards:
        if isinstance(guard, TenantScopeGuard):
            guard._hasher = HASHER
    return built


def per_call(calls: int, work: Callable[[int], None]) -> float:
    start = time.perf_counter()
    for i in range(calls):
        work(i)
    return (time.perf_counter() - start) / calls * 1e6


def tool_calls(policy: Policy, calls: int) -> Callable[[], float]:
    guards = enforcer(policy)

    def run() -> float:
        state = guards.start_run("r")
        return per_call(calls, lambda i: guards.before_tool_call(
            state, ToolCall("transfer", {"amount": i, "to": "bob"}, schema=SCHEMA), None))
    return run


def retrievals(policy: Policy, calls: int) -> Callable[[], float]:
    guards = enforcer(policy)
    docs = Retrieval("kb", [RetrievedDocument(f"doc_{i}", f"doc_{i}#0",
                                              {"tenant_id": "acme"}) for i in range(5)])

    def run() -> float:
        state = guards.start_run("r", tenant=HASHER("acme"))
        return per_call(calls, lambda i: guards.admit_retrieval(state, docs, None))
    return run


def answers(policy: Policy, calls: int) -> Callable[[], float]:
    guards = enforcer(policy)

    def run() -> float:
        state = guards.start_run("r")
        guards.admit_retrieval(state, Retrieval("kb", [RetrievedDocument(f"doc_{i}")
                                                      for i in range(5)]), None)
        return per_call(calls, lambda i: guards.check_answer(state, ANSWER, None))
    return run


class Person(BaseModel):
    name: str
    age: int


def failed_attempts(calls: int) -> tuple[Callable[[], float], Callable[[], float]]:
    guards = enforcer(Policy(structured_output=StructuredOutput("repair", max_repairs=1)))
    try:
        Person.model_validate({"name": "Ann", "age": "forty"})
    except ValidationError as error:
        failure_error = error

    def baseline() -> float:
        return per_call(calls, lambda i: Person.model_validate({"name": "Ann", "age": 40}))

    def judged(i: int) -> None:
        with contextlib.suppress(RepairRequested):
            guards.check_structured_output(
                guards.start_run("r"), StructuredResult(1, classify_failure(failure_error)),
                None)

    return baseline, lambda: per_call(calls, judged)


def alternate(rounds: int, baseline: Callable[[], float], variant: Callable[[], float]
              ) -> tuple[float, float]:
    base, var = [], []
    for _ in range(rounds):
        base.append(baseline())
        var.append(variant())
    return statistics.median(base), statistics.median(var)


def report(label: str, base: float, var: float) -> None:
    print(f"{label:58} baseline {base:7.2f} us  with guard {var:7.2f} us  "
          f"added {var - base:6.2f} us/call  ratio {var / base:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n, rounds = args.calls, args.rounds
    loop = Policy(tool_loop=ToolLoop(identical_calls=10**9))
    report("before_tool_call: tool_loop vs + tool_arguments (valid)",
           *alternate(rounds, tool_calls(loop, n),
                      tool_calls(loop.with_parts(tool_arguments=ToolArguments()), n)))
    report("admit_retrieval(5 docs): none vs tenant_scope + citations",
           *alternate(rounds, retrievals(Policy(), n),
                      retrievals(Policy(tenant_scope=TenantScope(), citations=Citations()),
                                 n)))
    report("check_answer(600 chars, 2 citations): none vs citations",
           *alternate(rounds, answers(Policy(), n), answers(Policy(citations=Citations()), n)))
    report("one failed structured attempt: validate vs + classify & judge",
           *alternate(rounds, *failed_attempts(n // 5 or 1)))


if __name__ == "__main__":
    main()
