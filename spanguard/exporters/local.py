"""Span exporter that writes to the local SQLite trace store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from spanguard.exporters.convert import to_row
from spanguard.store import StoredRow, TraceStore


class LocalStoreExporter(SpanExporter):
    """Writes each batch to :class:`TraceStore` in one statement; a failing write raises
    :class:`~spanguard.errors.StoreError`, which :class:`FailOpenExporter` counts."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [to_row(span) for span in spans]
        try:
            self.store.write_rows(rows)
        except UnicodeEncodeError:
            # A lone surrogate in a name or status message cannot be UTF-8; rather
            # than lose the whole batch for it, store '?' in its place.
            self.store.write_rows([_utf8_safe(row) for row in rows])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.store.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _utf8_safe(row: StoredRow) -> StoredRow:
    return cast(StoredRow, tuple(
        value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value
        for value in row))
