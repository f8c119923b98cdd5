"""User outcomes (seed 001's ``ai_user_action``): what the user did after the answer.

Without the outcome, telemetry says what the model did but not whether it
mattered; "cost per successful outcome" needs it. An outcome is recorded as a
short span, so every backend that shows traces shows it with its run:

- with ``trace_id``, the span is a CHILD in that trace and carries an OTel Link
  to its parent: the span a W3C ``traceparent`` names, else the current span
  when called during the run, else the run's root from the local store, else
  a stand-in id (the parent is a non-recording ``SpanContext``); it appears
  inside the trace in Phoenix and Langfuse;
- with only ``conversation_id``, it is a new trace in the same session
  (``session.id``, which both OpenInference/Phoenix and Langfuse group by),
  linked to the conversation's runs found in the local store. The id is
  hashed with the runs' key (unless the operator keeps conversation ids raw),
  so the lookup and the session grouping match what the runs carry.

Attributes follow OpenInference: it has no feedback span kind, so the span is an
``EVALUATOR`` (a human judging the output; Langfuse's type for it too) with the
feedback as ``input.value``, the action as ``output.value`` and ``metadata``.
Feedback text is redacted before it is set. The span carries ``spanguard.keep =
true`` so tail sampling never drops it (and keeps the run too if the run is still
being buffered). Each outcome is counted in ``agent.user.outcome.count`` by action.

Backends judge runs by their own feedback records, which they do not build from
spans: with the ``langfuse`` preset the outcome is also a Langfuse score, with the
``phoenix`` preset a Phoenix annotation (:mod:`spanguard.exporters.outcome_api`),
sent from a background thread.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from typing import Any, Literal, get_args

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags

from spanguard import semconv as sc
from spanguard.config import (
    configured,
    current_store,
    resolve_hasher,
    resolve_meter_provider,
    resolve_redactor,
    resolve_tracer_provider,
)
from spanguard.errors import OutcomeError, SpanguardError
from spanguard.exporters.outcome_api import OutcomeRecord
from spanguard.hashing import KeyedHasher

__all__ = ["SUCCESS_ACTIONS", "OutcomeAction", "outcome_span_name", "record_outcome"]

logger = logging.getLogger("spanguard.outcomes")

OutcomeAction = Literal["accepted", "dismissed", "escalated", "converted"]
ACTIONS: tuple[str, ...] = get_args(OutcomeAction)
# The intended user actions: the denominator of "cost per successful outcome".
SUCCESS_ACTIONS = frozenset({"accepted", "converted"})
_MAX_LINKS = 8
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def outcome_span_name(action: str) -> str:
    return f"user_outcome {action}"


def record_outcome(
    *,
    conversation_id: str | None = None,
    trace_id: str | int | None = None,
    action: OutcomeAction,
    rating: float | int | None = None,
    feedback: str | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    hasher: KeyedHasher | None = None,
) -> SpanContext:
    """Record what the user did after a run; returns the outcome span's context.

    ``trace_id`` is the run's trace id (32 hex digits or int) or a W3C
    ``traceparent``; ``conversation_id`` groups it with the session: give the
    id your application used (a LangGraph ``thread_id``, say); it is hashed
    with the same key as the runs' (``hasher``, default the configured one),
    so it matches their ``session.id``. At least one is required. Raises
    :class:`OutcomeError` for bad input (nothing is recorded then).
    """
    if action not in ACTIONS:
        raise OutcomeError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    if conversation_id is None and trace_id is None:
        raise OutcomeError("record_outcome needs conversation_id or trace_id "
                           "(the run the outcome is about)")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, (int, float))
                               or not math.isfinite(rating)):
        raise OutcomeError(f"rating must be a finite number, got {rating!r}")
    target = _parse_trace(trace_id) if trace_id is not None else None
    session = (resolve_hasher(hasher).conversation_id(conversation_id)
               if conversation_id is not None else None)

    attributes: dict[str, Any] = {
        sc.OPENINFERENCE_SPAN_KIND: sc.SpanKind.EVALUATOR.value,
        sc.OUTCOME_ACTION: action,
        sc.KEEP: True,
        sc.OI_OUTPUT_VALUE: action,
    }
    metadata: dict[str, Any] = {"action": action}
    if rating is not None:
        attributes[sc.OUTCOME_RATING] = float(rating)
        metadata["rating"] = float(rating)
    text: str | None = None
    if feedback:
        text, count = resolve_redactor().redact(feedback)
        attributes[sc.OI_INPUT_VALUE] = text
        attributes[sc.REDACTION_COUNT] = count

    links: list[Link] = []
    parent: SpanContext | None = None
    known = False
    if target is not None:
        parent, run_conversation, known = _target_root(target)
        context = trace.set_span_in_context(NonRecordingSpan(parent))
        links.append(Link(parent))
        attributes[sc.OUTCOME_TARGET_TRACE_ID] = trace.format_trace_id(parent.trace_id)
        session = session or run_conversation
    else:
        context = Context()  # a new trace, not a child of whatever is current
        links.extend(_conversation_links(session))
    if session:
        attributes[sc.GEN_AI_CONVERSATION_ID] = session
        attributes[sc.SESSION_ID] = session
    attributes[sc.OI_METADATA] = json.dumps(metadata)

    tracer = trace.get_tracer("spanguard.outcomes",
                              tracer_provider=resolve_tracer_provider(tracer_provider))
    span = tracer.start_span(outcome_span_name(action), context, attributes=attributes,
                             links=links)
    span.end()
    handle = configured()
    if handle is not None and handle.outcomes is not None:
        own = span.get_span_context()
        handle.outcomes.deliver(OutcomeRecord(
            action=action, outcome_span_id=trace.format_span_id(own.span_id),
            trace_id=trace.format_trace_id(parent.trace_id) if parent is not None else None,
            run_span_id=trace.format_span_id(parent.span_id) if known and parent else None,
            session_id=session if parent is None else None,
            rating=float(rating) if rating is not None else None, feedback=text))
    meter = metrics.get_meter("spanguard.outcomes",
                              meter_provider=resolve_meter_provider(meter_provider))
    meter.create_counter(sc.METRIC_USER_OUTCOME_COUNT, unit="{outcome}",
                         description="User outcomes after agent runs, by action"
                         ).add(1, {sc.OUTCOME_ACTION: action})
    return span.get_span_context()


def _parse_trace(value: str | int) -> tuple[int, int | None]:
    """(trace id, parent span id if the value named one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        trace_int, span_int = value, None
    elif isinstance(value, str):
        text = value.strip().lower()
        parts = text.split("-")
        try:
            if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
                trace_int, span_int = int(parts[1], 16), int(parts[2], 16) or None
            elif len(text) == 32:
                trace_int, span_int = int(text, 16), None
            else:
                raise ValueError(text)
        except ValueError:
            raise OutcomeError(f"trace_id {value!r} is neither 32 hex digits nor a W3C "
                               "traceparent") from None
    else:
        raise OutcomeError(f"trace_id must be a str or int, got {type(value).__name__}")
    if not 0 < trace_int < 1 << 128:
        raise OutcomeError(f"trace_id {value!r} is not a valid (non-zero, 128-bit) trace id")
    return trace_int, span_int


def _target_root(target: tuple[int, int | None]) -> tuple[SpanContext, str | None, bool]:
    """The run's root as a remote parent, its conversation id from the local store, and
    whether the parent is a real span (else a stand-in id in the run's trace)."""
    trace_int, span_int = target
    conversation: str | None = None
    ambient = trace.get_current_span().get_span_context()
    if span_int is None and ambient.is_valid and ambient.trace_id == trace_int:
        span_int = ambient.span_id  # recorded during the run: under the current step
    store = current_store()
    if store is not None:
        try:
            roots = store.roots(trace_id=trace.format_trace_id(trace_int))
        except SpanguardError as exc:  # telemetry fails open
            logger.debug("spanguard: outcome parent lookup failed: %s", exc)
            roots = []
        if roots:
            run = roots[-1]  # newest first: the earliest root is the run's
            if span_int is None:
                span_int = int(run.span_id, 16)
            value = run.attributes.get(sc.GEN_AI_CONVERSATION_ID)
            conversation = value if isinstance(value, str) else None
    known = span_int is not None
    if span_int is None:
        span_int = secrets.randbits(64) or 1
    return (SpanContext(trace_int, span_int, is_remote=True, trace_flags=_SAMPLED),
            conversation, known)


def _conversation_links(conversation_id: str | None) -> list[Link]:
    store = current_store()
    if store is None or not conversation_id:
        return []
    try:
        roots = store.roots(conversation_id=conversation_id, limit=_MAX_LINKS)
    except SpanguardError as exc:
        logger.debug("spanguard: outcome link lookup failed: %s", exc)
        return []
    return [Link(SpanContext(int(r.trace_id, 16), int(r.span_id, 16), is_remote=True,
                             trace_flags=_SAMPLED)) for r in roots]
