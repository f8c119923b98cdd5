"""ReadableSpan -> the local store's shapes.

``to_stored`` builds :class:`StoredSpan`, the one shape the store, the CLI and
tests share. ``to_row`` builds the store's row directly, for the exporter:
it runs once per exported span on the export thread, which competes with the
agent's threads for the GIL, so it skips the intermediate object and encodes
attributes with one prebuilt encoder (tuples become JSON arrays as they are).
Both are pinned to the same result by a round-trip test.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_span_id, format_trace_id

from spanguard.store import StoredRow, StoredSpan

_NO_TRACE_ID = "0" * 32
_NO_SPAN_ID = "0" * 16
_NO_EVENTS = "[]"
_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode


def to_stored(span: ReadableSpan) -> StoredSpan:
    ctx = span.context
    parent = span.parent
    service = span.resource.attributes.get("service.name") if span.resource else None
    return StoredSpan(
        trace_id=format_trace_id(ctx.trace_id) if ctx else _NO_TRACE_ID,
        span_id=format_span_id(ctx.span_id) if ctx else _NO_SPAN_ID,
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


def to_row(span: ReadableSpan) -> StoredRow:
    ctx = span.context
    parent = span.parent
    service = span.resource.attributes.get("service.name") if span.resource else None
    status = span.status
    attributes = span.attributes
    events = span.events
    return (
        format(ctx.trace_id, "032x") if ctx else _NO_TRACE_ID,
        format(ctx.span_id, "016x") if ctx else _NO_SPAN_ID,
        format(parent.span_id, "016x") if parent is not None else None,
        span.name,
        span.kind.name if span.kind is not None else "INTERNAL",
        span.start_time or 0,
        span.end_time,
        status.status_code.name,
        status.description,
        _encode(dict(attributes)) if attributes else "{}",
        _encode([{"name": event.name, "timestamp": event.timestamp,
                  "attributes": dict(event.attributes) if event.attributes else {}}
                 for event in events]) if events else _NO_EVENTS,
        str(service) if service is not None else None,
    )


def _plain(attributes: Any) -> dict[str, Any]:
    if not attributes:
        return {}
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in attributes.items()}
