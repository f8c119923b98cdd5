"""The one place spanguard writes Langfuse's own span attributes.

Langfuse reads the OpenTelemetry GenAI and OpenInference vocabularies already
(observation type, model, usage, ``session.id``, ``user.id``, ``input.value``), so
spans carry nothing Langfuse-specific by default. A few things Langfuse takes only
from its own documented attributes (``LangfuseOtelSpanAttributes`` in
``packages/shared/src/server/otel/attributes.ts``), read by ``OtelIngestionProcessor``:

- ``langfuse.observation.completion_start_time`` (``extractCompletionStartTime``): a
  streamed generation's time to first token, from ``gen_ai.response.time_to_first_chunk``;
- ``langfuse.observation.usage_details`` / ``cost_details`` (``extractUsageDetails`` /
  ``extractCostDetails``): a generation's usage in Langfuse's own keys (``input`` without
  cached tokens, ``input_cached_tokens``, ``output_reasoning_tokens``, ``total``), so
  nothing is counted under two names, and spanguard's price for it;
- ``langfuse.trace.name``, ``.input``, ``.output``, ``.tags`` on the root
  (``createTraceEvent``): the agent's name, the run's input and answer (content capture
  on), the run's tags and the configured ones;
- ``langfuse.environment`` / ``langfuse.release`` on every span (``extractEnvironment``);
- ``langfuse.observation.status_message`` / ``.level`` on a governed tool span: the
  hold's fate, who decided it, the verification and its reason, so a reviewer reads
  them in the observation list, not only in its attributes.

And one thing it takes away: an ``invoke_agent`` span's ``gen_ai.usage.*`` (the agent's
aggregate, which the conventions allow). Langfuse since pull request #14808 ignores
usage on such spans; a Langfuse older than that adds it to the trace's totals, counting
the run twice. Without it, both versions show the true totals.

:class:`LangfuseExporter` adds them to copies of the spans a Langfuse destination
exports, on the exporter's thread (the agent's path pays nothing), after redaction.
``configure(preset="langfuse")`` wraps the Langfuse destination with it;
``configure(langfuse_attributes=True)`` wraps every OTLP destination (a Collector
that forwards to Langfuse).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeGuard

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from spanguard import semconv as sc

__all__ = ["LangfuseExporter", "LangfuseOptions", "langfuse_attributes"]

logger = logging.getLogger("spanguard.exporters.langfuse")

_LLM = sc.SpanKind.LLM.value
_INVOKE_AGENT = sc.OperationName.INVOKE_AGENT.value
_USAGE_PREFIX = "gen_ai.usage."


@dataclass(frozen=True)
class LangfuseOptions:
    """What the Langfuse mapping adds beyond the spans: an environment and release for
    every observation, and tags for every trace."""

    environment: str | None = None
    release: str | None = None
    tags: Sequence[str] = field(default_factory=tuple)


def langfuse_attributes(span: ReadableSpan, options: LangfuseOptions) -> dict[str, Any]:
    """The Langfuse attributes ``span`` should also carry (an empty dict: none)."""
    attrs = span.attributes or {}
    out: dict[str, Any] = {}
    if options.environment:
        out[sc.LANGFUSE_ENVIRONMENT] = options.environment
    if options.release:
        out[sc.LANGFUSE_RELEASE] = options.release
    if attrs.get(sc.OPENINFERENCE_SPAN_KIND) == _LLM:
        _generation(span, attrs, out)
    if span.parent is None:
        _trace(span, attrs, options, out)
    if sc.HOLD_DECISION in attrs or sc.VERIFICATION_STATUS in attrs:
        _governance(span, attrs, out)
    return out


def _generation(span: ReadableSpan, attrs: Mapping[str, Any], out: dict[str, Any]) -> None:
    """A span from any source may carry anything: values that cannot be what they claim
    (a negative or non-finite time, a token count that is not a count) are left out."""
    first = attrs.get(sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    if _number(first) and first >= 0 and span.start_time is not None:
        moment = span.start_time + int(first * 1e9)
        if span.end_time is None or moment <= span.end_time:
            out[sc.LANGFUSE_OBSERVATION_COMPLETION_START_TIME] = _iso(moment)
    inputs = _int(attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS), None)
    outputs = _int(attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS), None)
    if inputs is not None and outputs is not None:
        cached = _int(attrs.get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS))
        written = _int(attrs.get(sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS))
        reasoning = _int(attrs.get(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS))
        usage = {"input": max(inputs - cached - written, 0),
                 "output": max(outputs - reasoning, 0), "total": inputs + outputs}
        if cached:
            usage["input_cached_tokens"] = cached
        if written:
            usage["input_cache_creation"] = written
        if reasoning:
            usage["output_reasoning_tokens"] = reasoning
        out[sc.LANGFUSE_OBSERVATION_USAGE_DETAILS] = json.dumps(usage)
    cost = attrs.get(sc.COST_USD)
    if _number(cost) and cost >= 0:
        out[sc.LANGFUSE_OBSERVATION_COST_DETAILS] = json.dumps({"total": cost})


def _trace(span: ReadableSpan, attrs: Mapping[str, Any], options: LangfuseOptions,
           out: dict[str, Any]) -> None:
    agent = attrs.get(sc.GEN_AI_AGENT_NAME)
    out[sc.LANGFUSE_TRACE_NAME] = agent if isinstance(agent, str) and agent else span.name
    for source, target in ((sc.OI_INPUT_VALUE, sc.LANGFUSE_TRACE_INPUT),
                           (sc.OI_OUTPUT_VALUE, sc.LANGFUSE_TRACE_OUTPUT)):
        value = attrs.get(source)
        if isinstance(value, str):
            out[target] = value
    tags = list(options.tags)
    own = attrs.get(sc.OI_TAG_TAGS)
    if isinstance(own, (list, tuple)):
        tags.extend(str(tag) for tag in own if str(tag) not in tags)
    if tags:
        out[sc.LANGFUSE_TRACE_TAGS] = tags


def _governance(span: ReadableSpan, attrs: Mapping[str, Any], out: dict[str, Any]) -> None:
    parts: list[str] = []
    decision = attrs.get(sc.HOLD_DECISION)
    if decision is not None:
        text = f"hold {attrs.get(sc.HOLD_ID, '?')} {decision}"
        checker = attrs.get(sc.HOLD_CHECKER)
        if checker and decision in ("approved", "rejected"):
            text += f" by {checker}"
        parts.append(text)
    verification = attrs.get(sc.VERIFICATION_STATUS)
    if verification is not None:
        reason = attrs.get(sc.VERIFICATION_REASON)
        parts.append(f"verification {verification}" + (f": {reason}" if reason else ""))
    status = span.status
    if status.status_code is StatusCode.ERROR and status.description:
        parts.append(status.description)
    out[sc.LANGFUSE_OBSERVATION_STATUS_MESSAGE] = "; ".join(parts)
    if decision in ("created", "pending") and verification is None:
        out[sc.LANGFUSE_OBSERVATION_LEVEL] = "WARNING"  # waiting for a person, not failed


def _int(value: Any, default: int | None = 0) -> Any:
    """A token count (a non-negative int, never a bool), else ``default``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


def _number(value: Any) -> TypeGuard[float]:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _iso(nanoseconds: int) -> str:
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=rest // 1000)
    return moment.isoformat().replace("+00:00", "Z")


class LangfuseExporter(SpanExporter):
    """Exports ``inner``'s spans with :func:`langfuse_attributes` added (copies; a span
    that needs none is passed through as it is)."""

    def __init__(self, inner: SpanExporter, options: LangfuseOptions | None = None) -> None:
        self.inner = inner
        self.options = options or LangfuseOptions()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self.map_span(span) for span in spans])

    def map_span(self, span: ReadableSpan) -> ReadableSpan:
        try:
            extra = langfuse_attributes(span, self.options)
        except Exception:  # telemetry fails open: the span goes as it is
            logger.debug("spanguard: Langfuse mapping failed for %s", span.name, exc_info=True)
            return span
        attributes = span.attributes or {}
        aggregate = attributes.get(sc.GEN_AI_OPERATION_NAME) == _INVOKE_AGENT
        if not extra and not aggregate:
            return span
        kept = {k: v for k, v in attributes.items()
                if not (aggregate and k.startswith(_USAGE_PREFIX))}
        return ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource,
            attributes={**kept, **extra}, events=span.events,
            links=span.links, kind=span.kind, status=span.status, start_time=span.start_time,
            end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
