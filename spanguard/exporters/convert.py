"""ReadableSpan -> StoredSpan, the one shape the store, the CLI and tests share."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_span_id, format_trace_id

from spanguard.store import StoredSpan


def to_stored(span: ReadableSpan) -> StoredSpan:
    ctx = span.context
    parent = span.parent
    service = span.resource.attributes.get("service.name") if span.resource else None
    return StoredSpan(
        trace_id=format_trace_id(ctx.trace_id) if ctx else "0" * 32,
        span_id=format_span_id(ctx.span_id) if ctx else "0" * 16,
        parent_span_id=format_span_id(parent.span_id) if parent is not None else None,
        name=span.name,
        kind=span.kind.name if span.kind is not None else "INTERNAL",
        start_time=span.start_time or 0,
        end_time=span.end_time,
        status=span.status.status_code.name,
        status_message=span.status.description,
        attributes=_plain(span.attributes),
        events=[
            {"name": event.name, "timestamp": event.timestamp,
             "attributes": _plain(event.attributes)}
            for event in span.events
        ],
        service_name=str(service) if service is not None else None,
    )


def _plain(attributes: Any) -> dict[str, Any]:
    if not attributes:
        return {}
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in attributes.items()}
