"""record_outcome: a span Phoenix/Langfuse show with the run, and a metric by action."""

from __future__ import annotations

import json
import math

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

import spanguard
from spanguard import semconv as sc
from spanguard.attributes import agent_attributes, run_identity_attributes
from spanguard.errors import OutcomeError
from spanguard.store import StoredSpan
from tests.governance.test_metrics import point, points


def _run(handle: spanguard.SpanguardHandle, conversation: str) -> str:
    tracer = handle.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent support", attributes={
            **agent_attributes("support"),
            **run_identity_attributes(conversation_id=conversation,
                                      hasher=handle.hasher)}) as span:
        trace_id = format_trace_id(span.get_span_context().trace_id)
    handle.force_flush()
    return trace_id


def _stored(handle: spanguard.SpanguardHandle, name: str) -> list[StoredSpan]:
    handle.force_flush()
    assert handle.store is not None
    return [s for s in handle.store.spans() if s.name == name]


def test_outcome_for_a_trace_is_a_linked_child_of_its_root_and_is_counted() -> None:
    reader = InMemoryMetricReader()
    sink = InMemorySpanExporter()
    handle = spanguard.configure(meter_provider=MeterProvider(metric_readers=[reader]),
                                 exporters=[sink])
    trace_id = _run(handle, "conv-7")
    (root,) = _stored(handle, "invoke_agent support")

    context = spanguard.record_outcome(trace_id=trace_id, action="accepted", rating=4.5,
                                       feedback="great, reply to ann@example.com")

    (outcome,) = _stored(handle, "user_outcome accepted")
    assert format_trace_id(context.trace_id) == trace_id == outcome.trace_id
    assert outcome.parent_span_id == root.span_id  # shows inside the trace
    attrs = outcome.attributes
    assert attrs[sc.OUTCOME_ACTION] == "accepted"
    assert attrs[sc.OUTCOME_RATING] == 4.5
    assert attrs[sc.KEEP] is True
    # the run's session, as the run carries it: a keyed hash of "conv-7"
    assert attrs[sc.SESSION_ID] == attrs[sc.GEN_AI_CONVERSATION_ID] == handle.hasher("conv-7")
    assert attrs[sc.OI_INPUT_VALUE] == "great, reply to [REDACTED:email]"
    assert attrs[sc.OPENINFERENCE_SPAN_KIND] == "EVALUATOR"
    # Langfuse's own attributes come only from its mapping, for a Langfuse destination.
    assert not [key for key in attrs if key.startswith("langfuse.")]
    assert json.loads(attrs[sc.OI_METADATA]) == {"action": "accepted", "rating": 4.5}

    exported = [s for s in sink.get_finished_spans() if s.name == "user_outcome accepted"]
    (link,) = exported[0].links
    assert format_span_id(link.context.span_id) == root.span_id
    assert format_trace_id(link.context.trace_id) == trace_id

    spanguard.record_outcome(trace_id=trace_id, action="dismissed")
    found = points(reader)
    assert point(found, sc.METRIC_USER_OUTCOME_COUNT, **{sc.OUTCOME_ACTION: "accepted"}).value == 1
    assert point(found, sc.METRIC_USER_OUTCOME_COUNT,
                 **{sc.OUTCOME_ACTION: "dismissed"}).value == 1
    handle.shutdown()


def test_traceparent_names_the_parent_span_directly() -> None:
    handle = spanguard.configure()
    trace_hex, span_hex = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    spanguard.record_outcome(trace_id=f"00-{trace_hex}-{span_hex}-01", action="escalated")
    (outcome,) = _stored(handle, "user_outcome escalated")
    assert (outcome.trace_id, outcome.parent_span_id) == (trace_hex, span_hex)
    assert outcome.attributes[sc.OUTCOME_TARGET_TRACE_ID] == trace_hex
    handle.shutdown()


def test_unknown_trace_still_lands_in_that_trace() -> None:
    handle = spanguard.configure()
    trace_hex = "1" * 32
    spanguard.record_outcome(trace_id=int(trace_hex, 16), action="converted",
                             conversation_id="c-1")
    (outcome,) = _stored(handle, "user_outcome converted")
    assert outcome.trace_id == trace_hex
    assert outcome.parent_span_id is not None
    assert outcome.attributes[sc.SESSION_ID] == handle.hasher("c-1")
    handle.shutdown()


def test_conversation_only_outcome_is_a_new_trace_linked_to_the_conversation_runs() -> None:
    sink = InMemorySpanExporter()
    handle = spanguard.configure(exporters=[sink])
    runs = {_run(handle, "conv-9") for _ in range(2)}
    _run(handle, "other")
    spanguard.record_outcome(conversation_id="conv-9", action="converted")
    (outcome,) = _stored(handle, "user_outcome converted")
    assert outcome.trace_id not in runs
    assert outcome.parent_span_id is None
    assert outcome.attributes[sc.SESSION_ID] == handle.hasher("conv-9")
    exported = next(s for s in sink.get_finished_spans() if s.name == "user_outcome converted")
    assert {format_trace_id(link.context.trace_id) for link in exported.links} == runs
    handle.shutdown()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"trace_id": "1" * 32, "action": "liked"}, "unknown action"),
    ({"action": "accepted"}, "needs conversation_id or trace_id"),
    ({"trace_id": "1" * 32, "action": "accepted", "rating": True}, "finite number"),
    ({"trace_id": "1" * 32, "action": "accepted", "rating": math.nan}, "finite number"),
    ({"trace_id": "not-a-trace", "action": "accepted"}, "32 hex digits"),
    ({"trace_id": "0" * 32, "action": "accepted"}, "non-zero"),
])
def test_bad_input_is_a_typed_error_and_records_nothing(kwargs: dict[str, object],
                                                         message: str) -> None:
    handle = spanguard.configure()
    with pytest.raises(OutcomeError, match=message):
        spanguard.record_outcome(**kwargs)  # type: ignore[arg-type]
    handle.force_flush()
    assert handle.store is not None and handle.store.spans() == []
    handle.shutdown()


def test_outcome_during_the_run_keeps_the_run_through_tail_sampling() -> None:
    handle = spanguard.configure(sample_ratio=0.0)
    tracer = handle.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent support") as root:
        spanguard.record_outcome(trace_id=root.get_span_context().trace_id,
                                 action="accepted")
    with tracer.start_as_current_span("invoke_agent unflagged"):
        pass
    run = _stored(handle, "invoke_agent support")
    outcome = _stored(handle, "user_outcome accepted")
    assert [s.span_id for s in run] == [o.parent_span_id for o in outcome]  # under the step
    assert _stored(handle, "invoke_agent unflagged") == []
    handle.shutdown()
