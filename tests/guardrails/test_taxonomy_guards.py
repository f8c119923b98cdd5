"""Seed 004's taxonomy guards, framework-free: what each refuses, flags and records.

The adapters (MCP, LangChain, LlamaIndex) are tested with the real frameworks
elsewhere; here the guards meet an :class:`Enforcer` and a real span capture, so
the decision, its ``error.type`` and the attributes on the span are pinned.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from spanguard import semconv as sc
from spanguard.guardrails import Policy
from spanguard.guardrails.citations import Citations, InvalidCitation
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.steps import (
    Answer,
    Retrieval,
    RetrievedDocument,
    ToolCall,
    ToolOutcome,
)
from spanguard.guardrails.stores import MemoryStore
from spanguard.guardrails.structured import (
    SCHEMA_VALIDATION_ERROR,
    SYNTAX_DECODE_ERROR,
    RepairRequested,
    StructuredOutput,
    StructuredOutputError,
    StructuredResult,
    classify_failure,
)
from spanguard.guardrails.tenant_scope import TenantScope, TenantScopeViolation
from spanguard.guardrails.tool_arguments import ToolArgumentError, ToolArguments, ToolSchema
from spanguard.hashing import KeyedHasher
from spanguard.testing import SpanCapture, capture

TRANSFER = {"type": "object", "properties": {
    "amount": {"type": "number", "minimum": 0},
    "to": {"type": "string"},
    "currency": {"enum": ["EUR", "USD"]}},
    "required": ["amount", "to"], "additionalProperties": False}


def enforcer(policy: Policy, cap: SpanCapture,
             reader: InMemoryMetricReader | None = None) -> Enforcer:
    meters = MeterProvider(metric_readers=[reader]) if reader is not None else None
    return Enforcer(policy, cap.tracer_provider, meters, store=MemoryStore())


def findings(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    counts: dict[str, int] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == sc.METRIC_GUARDRAIL_FINDINGS:
                    for point in metric.data.data_points:
                        key = str(point.attributes[sc.ERROR_TYPE])
                        counts[key] = counts.get(key, 0) + int(point.value)
    return counts


# --- tool arguments ------------------------------------------------------------------

def test_arguments_off_the_schema_are_refused_with_paths_and_rules_but_no_values() -> None:
    cap = capture()
    reader = InMemoryMetricReader()
    guards = enforcer(Policy(tool_arguments=ToolArguments()), cap, reader)
    run = guards.start_run("r")
    call = ToolCall("transfer", {"amount": -5, "to": 7, "memo": "rent for flat 3"},
                    schema=ToolSchema(TRANSFER, version="1.4.0"))
    span = cap.tracer_provider.get_tracer("t").start_span("execute_tool transfer")

    with pytest.raises(ToolArgumentError) as refused:
        guards.before_tool_call(run, call, span)
    span.end()

    assert refused.value.error_type == "tool_argument_error"
    assert refused.value.count == 3
    text = str(refused.value)
    assert "$.amount: minimum 0" in text and "$.to: type 'string'" in text
    assert "$: unexpected ['memo']" in text
    assert "rent for flat 3" not in text and "-5" not in text
    guardrail = next(s for s in cap.spans() if s.name == "guardrail tool_arguments")
    assert guardrail.attributes[sc.ERROR_TYPE] == "tool_argument_error"
    assert guardrail.attributes[sc.TOOL_SCHEMA_HASH] == ToolSchema(TRANSFER).digest
    assert guardrail.attributes[sc.TOOL_SCHEMA_VERSION] == "1.4.0"
    assert guardrail.attributes[sc.VALIDATION_ERROR_COUNT] == 3
    assert findings(reader) == {"tool_argument_error": 1}


def test_matching_arguments_and_tools_without_a_schema_pass() -> None:
    guards = enforcer(Policy(tool_arguments=ToolArguments()), capture())
    run = guards.start_run("r")
    guards.before_tool_call(run, ToolCall("transfer", {"amount": 5, "to": "bob"},
                                          schema=ToolSchema(TRANSFER)), None)
    guards.before_tool_call(run, ToolCall("unknown", {"anything": object()}), None)


def test_only_the_listed_tools_are_checked() -> None:
    guards = enforcer(Policy(tool_arguments=ToolArguments(tools=("pay_*",))), capture())
    run = guards.start_run("r")
    guards.before_tool_call(run, ToolCall("transfer", {}, schema=ToolSchema(TRANSFER)), None)
    with pytest.raises(ToolArgumentError):
        guards.before_tool_call(run, ToolCall("pay_out", {}, schema=ToolSchema(TRANSFER)),
                                None)


def test_a_declared_schema_that_is_not_json_schema_refuses_every_call() -> None:
    guards = enforcer(Policy(tool_arguments=ToolArguments()), capture())
    broken = ToolSchema({"type": "object", "properties": {"a": {"type": 12}}})
    with pytest.raises(ToolArgumentError, match="not valid JSON Schema"):
        guards.before_tool_call(guards.start_run("r"), ToolCall("t", {"a": 1}, schema=broken),
                                None)


def test_one_schema_compiles_once_under_concurrent_first_checks() -> None:
    schema = ToolSchema(TRANSFER)
    results: list[int] = []
    barrier = threading.Barrier(8)

    def check() -> None:
        barrier.wait()
        results.append(schema.errors({"amount": "x", "to": "y"}, 5)[0])

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [1] * 8
    assert schema._validator is not None


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8),
                       st.text(alphabet="QXZ#%", min_size=6, max_size=20), max_size=4))
def test_no_validation_summary_ever_quotes_an_argument_value(arguments: dict[str, str]) -> None:
    # Values are drawn from characters no schema word contains, so any leak shows.
    count, summary = ToolSchema(TRANSFER).errors(arguments, 10)
    assert count >= 1  # "amount" and "to" are required; strings are never numbers
    for value in arguments.values():
        assert all(value not in line for line in summary)


# --- structured output ---------------------------------------------------------------

def test_a_parse_failure_is_typed_by_what_it_wraps() -> None:
    try:
        json.loads("{'not': json}")
    except json.JSONDecodeError as decode:
        wrapper = ValueError("Invalid json output")
        wrapper.__cause__ = decode
        assert classify_failure(wrapper).error_type == SYNTAX_DECODE_ERROR
    assert classify_failure(None).error_type == SYNTAX_DECODE_ERROR
    assert classify_failure(RuntimeError("odd")).summary == ("$: RuntimeError",)


def test_a_pydantic_failure_is_schema_unless_the_text_was_not_json() -> None:
    from pydantic import BaseModel, ValidationError

    class Person(BaseModel):
        name: str
        age: int

    with pytest.raises(ValidationError) as missing:
        Person.model_validate_json('{"name": "Ann", "age": "old"}')
    failure = classify_failure(missing.value)
    assert failure.error_type == SCHEMA_VALIDATION_ERROR
    assert failure.summary == ("$.age: int_parsing",)
    with pytest.raises(ValidationError) as garbled:
        Person.model_validate_json("Ann is 40")
    assert classify_failure(garbled.value).error_type == SYNTAX_DECODE_ERROR


def test_repair_asks_again_until_the_last_attempt_then_refuses() -> None:
    cap = capture()
    guards = enforcer(Policy(structured_output=StructuredOutput("repair", max_repairs=2)), cap)
    run = guards.start_run("r")
    failure = classify_failure(None)
    for attempt in (1, 2):
        with pytest.raises(RepairRequested) as again:
            guards.check_structured_output(run, StructuredResult(attempt, failure), None)
        assert "no structured output" in again.value.feedback()
    with pytest.raises(StructuredOutputError) as final:
        guards.check_structured_output(run, StructuredResult(3, failure), None)
    assert not isinstance(final.value, RepairRequested)
    assert final.value.error_type == SYNTAX_DECODE_ERROR and final.value.attempts == 3
    spans = [s for s in cap.spans() if s.name == "guardrail structured_output"]
    assert [s.attributes[sc.REPAIR_ATTEMPT] for s in spans] == [1, 2, 3]
    assert {s.attributes[sc.ERROR_TYPE] for s in spans} == {SYNTAX_DECODE_ERROR}
    assert [s.attributes[sc.GUARDRAIL_DECISION] for s in spans] == ["retry", "retry", "deny"]


def test_refuse_gives_up_at_the_first_failure_and_a_good_result_passes() -> None:
    guards = enforcer(Policy(structured_output=StructuredOutput()), capture())
    run = guards.start_run("r")
    guards.check_structured_output(run, StructuredResult(1, None), None)
    with pytest.raises(StructuredOutputError) as refused:
        guards.check_structured_output(run, StructuredResult(1, classify_failure(None)), None)
    assert not isinstance(refused.value, RepairRequested)


# --- citations and tenant scope ----------------------------------------------------

def retrieval(*docs: tuple[str, str | None]) -> Retrieval:
    return Retrieval("kb", [RetrievedDocument(doc_id, f"{doc_id}#0",
                                              {"tenant_id": tenant} if tenant else {})
                            for doc_id, tenant in docs])


def test_an_answer_citing_an_unretrieved_source_is_flagged_or_refused() -> None:
    for action in ("flag", "refuse"):
        cap = capture()
        reader = InMemoryMetricReader()
        guards = enforcer(Policy(citations=Citations(action=action)), cap, reader)
        run = guards.start_run("r")
        guards.admit_retrieval(run, retrieval(("doc_a", None)), None)
        answer = Answer("Margins rose [source: doc_a] and fell [source: doc_zz].")
        span = cap.tracer_provider.get_tracer("t").start_span("chat m")
        if action == "refuse":
            with pytest.raises(InvalidCitation) as refused:
                guards.check_answer(run, answer, span)
            assert refused.value.invalid == ("doc_zz",)
        else:
            guards.check_answer(run, answer, span)
        span.end()
        assert findings(reader) == {"invalid_citation": 1}
        guards.check_answer(run, Answer("Only [source: doc_a#0] here."), None)


def test_the_citation_format_is_a_regex_group_or_a_callable() -> None:
    assert Citations(pattern=r"\[\[(?P<id>[^\]]+)\]\]").cited("a [[x]] b [[y]] [[x]]") == \
        ["x", "y"]
    assert Citations(extract=lambda text: text.split()[-1:]).cited("see doc_9") == ["doc_9"]


def test_foreign_documents_are_dropped_and_never_count_as_retrieved() -> None:
    hasher = KeyedHasher(b"k" * 32)
    cap = capture()
    policy = Policy(tenant_scope=TenantScope(), citations=Citations(action="refuse"))
    guards = Enforcer(policy, cap.tracer_provider, store=MemoryStore())
    guards.guards[0]._hasher = hasher  # type: ignore[attr-defined]
    run = guards.start_run("r", tenant=hasher("acme"))
    found = retrieval(("a1", "acme"), ("g1", "globex"), ("a2", hasher("acme")), ("u1", None))

    assert guards.admit_retrieval(run, found, None) == (1,)
    with pytest.raises(InvalidCitation):
        guards.check_answer(run, Answer("see [source: g1]"), None)
    guards.check_answer(run, Answer("see [source: a1] [source: a2] [source: u1]"), None)
    blocked = next(s for s in cap.spans() if s.name == "guardrail tenant_scope")
    attrs: dict[str, Any] = dict(blocked.attributes)
    assert attrs[sc.ERROR_TYPE] == "tenant_scope_violation"
    assert attrs[sc.RETRIEVAL_AUTHORIZED_COUNT] == 3
    assert attrs[sc.TENANT_SCOPE_FOREIGN_HASHES] == [hasher("globex")]
    assert attrs[sc.TENANT_SCOPE_RESOURCE_HASHES] == [hasher("g1")]
    assert "globex" not in json.dumps(attrs) and "g1" not in blocked.attributes[
        sc.GUARDRAIL_REASON]


def test_a_run_without_a_tenant_sees_no_labelled_document() -> None:
    guards = enforcer(Policy(tenant_scope=TenantScope(unlabelled="block")), capture())
    run = guards.start_run("r")
    assert guards.admit_retrieval(run, retrieval(("a", "acme"), ("u", None)), None) == (0, 1)


def test_a_tool_result_of_another_tenant_is_withheld_and_audited_with_hashes() -> None:
    store = MemoryStore()
    hasher = KeyedHasher(b"k" * 32)
    guards = Enforcer(Policy(tenant_scope=TenantScope()), capture().tracer_provider,
                      store=store)
    guards.guards[0]._hasher = hasher  # type: ignore[attr-defined]
    run = guards.start_run("r", tenant=hasher("acme"), identity="agent")
    mine = {"structuredContent": {"tenant_id": "acme", "v": 1}}
    theirs = {"_meta": {"tenant_id": "globex"}, "content": []}

    assert guards.after_tool_call(run, ToolCall("lookup", {}), ToolOutcome(mine), None) == []
    decisions = guards.after_tool_call(run, ToolCall("lookup", {}, arguments_hash="sha256:x"),
                                       ToolOutcome(theirs), None)
    assert [d.error.error_type for d in decisions if d.error] == ["tenant_scope_violation"]
    records = store.audit.records()
    assert [r.event for r in records] == ["tenant_scope.refused"]
    assert "globex" not in json.dumps(records[0].to_json())


def test_documents_dropped_concurrently_stay_per_run() -> None:
    hasher = KeyedHasher(b"k" * 32)
    guards = Enforcer(Policy(tenant_scope=TenantScope(), citations=Citations()),
                      capture().tracer_provider, store=MemoryStore())
    guards.guards[0]._hasher = hasher  # type: ignore[attr-defined]
    errors: list[BaseException] = []

    def worker(tenant: str) -> None:
        try:
            run = guards.start_run(tenant, tenant=hasher(tenant))
            for n in range(50):
                docs = retrieval((f"{tenant}-{n}", tenant), (f"x-{n}", "other"))
                assert guards.admit_retrieval(run, docs, None) == (1,)
            assert run.scratch["spanguard.citations"] == {
                f"{tenant}-{n}{suffix}" for n in range(50) for suffix in ("", "#0")}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_dropping_guard_that_names_nothing_is_raised_not_looped() -> None:
    from spanguard.guardrails.guard import Guard
    from spanguard.guardrails.steps import Decision

    class Confused(Guard):
        name = "confused"

        def after_retrieval(self, run: Any, found: Retrieval) -> Decision:
            error = TenantScopeViolation([7], len(found.documents), None)
            return Decision("deny", self.name, str(error), {}, error)

    guards = Enforcer(Policy(guards=(Confused(),)), capture().tracer_provider,
                      store=MemoryStore())
    with pytest.raises(TenantScopeViolation):
        guards.admit_retrieval(guards.start_run("r"), retrieval(("a", None)), None)
