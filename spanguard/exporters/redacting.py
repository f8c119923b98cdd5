"""An exporter wrapper that sends redacted copies of spans.

Finished spans are immutable and shared by every processor, so redaction
cannot edit them in place: one destination (the local store, when the user
asks for raw content) may need the original while another (OTLP) must get the
redacted form. This wrapper builds a copy per destination, in the exporter's
own thread (never on the agent's), and only for spans that carry content: a
span without content attributes is passed through as the same object.

It fails closed for content: if redaction of a value raises, that value is
replaced by ``[REDACTED:error]`` rather than exported raw.

Each redaction and each failure is counted in ``spanguard.redaction.events``
(by ``spanguard.redaction.outcome``: ``redacted`` or ``failed``), the privacy
SLO's signal; on ``meter_provider``, else the global meter provider.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from spanguard import semconv as sc
from spanguard.redaction import Redactor, is_content_key, placeholder

logger = logging.getLogger("spanguard.redaction")
_REDACTED = {sc.REDACTION_OUTCOME: "redacted"}
_FAILED = {sc.REDACTION_OUTCOME: "failed"}


class RedactingExporter(SpanExporter):
    """Exports ``inner``'s spans with content attributes passed through ``redactor``."""

    def __init__(self, inner: SpanExporter, redactor: Redactor,
                 meter_provider: metrics.MeterProvider | None = None) -> None:
        self.inner = inner
        self.redactor = redactor
        meter = metrics.get_meter("spanguard.redaction", meter_provider=meter_provider)
        self._events = meter.create_counter(
            sc.METRIC_REDACTION_EVENTS, unit="{value}",
            description="Sensitive values redacted before export, and redaction failures")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self.redact_span(span) for span in spans])

    def redact_span(self, span: ReadableSpan) -> ReadableSpan:
        """The span itself when it has no content; otherwise a redacted copy."""
        attributes = span.attributes
        events = span.events
        status = span.status
        has_content = _has_content(attributes) or any(_has_content(e.attributes) for e in events)
        if not has_content and not (status.status_code is StatusCode.ERROR
                                    and status.description):
            return span
        count = 0
        new_attributes: Mapping[str, Any] | None = attributes
        redacted = self._attributes(attributes)
        if redacted is not None:
            new_attributes, count = redacted
        new_events: list[Event] = []
        for event in events:
            redacted_event = self._attributes(event.attributes)
            if redacted_event is None:
                new_events.append(event)
                continue
            new_events.append(Event(event.name, redacted_event[0], event.timestamp))
            count += redacted_event[1]
        if status.status_code is StatusCode.ERROR and status.description:
            description, found = self._text(status.description)
            if found:
                status = Status(StatusCode.ERROR, description)
                count += found
        if not has_content and status is span.status:
            return span
        out = dict(new_attributes or {})
        if count:
            self._events.add(count, _REDACTED)
        if has_content:
            previous = out.get(sc.REDACTION_COUNT)
            out[sc.REDACTION_COUNT] = count + (previous if isinstance(previous, int) else 0)
        return ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=out, events=new_events, links=span.links, kind=span.kind,
            status=status, start_time=span.start_time, end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope)

    def _attributes(self, attributes: Mapping[str, Any] | None
                    ) -> tuple[dict[str, Any], int] | None:
        try:
            return self.redactor.redact_attributes(attributes)
        except Exception as exc:  # fail closed: never export content we could not check
            logger.warning("spanguard: redaction failed (%s); content attributes replaced", exc)
            self._events.add(1, _FAILED)
            return ({k: placeholder("error") if is_content_key(k) else v
                     for k, v in (attributes or {}).items()}, 0)

    def _text(self, text: str) -> tuple[str, int]:
        try:
            return self.redactor.redact(text)
        except Exception as exc:
            logger.warning("spanguard: redaction failed (%s); status message replaced", exc)
            self._events.add(1, _FAILED)
            return placeholder("error"), 1

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _has_content(attributes: Mapping[str, Any] | None) -> bool:
    if not attributes:
        return False
    return any(is_content_key(key) for key in attributes)
