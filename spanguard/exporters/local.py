"""Span exporter that writes to the local SQLite trace store."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from spanguard.exporters.convert import to_stored
from spanguard.store import TraceStore


class LocalStoreExporter(SpanExporter):
    """Writes batches to :class:`TraceStore`; errors surface as FAILURE, not exceptions."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.store.write(to_stored(span) for span in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.store.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
