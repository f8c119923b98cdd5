"""Prints each finished trace as an indented tree: the development view."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from spanguard.exporters.convert import to_stored
from spanguard.store import StoredSpan
from spanguard.tree import build_forest, render

_MAX_PENDING_TRACES = 1000


class ConsoleTreeExporter(SpanExporter):
    """Buffers a trace's spans until its local root ends, then prints the tree."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pending: dict[int, list[StoredSpan]] = {}
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        finished: list[list[StoredSpan]] = []
        with self._lock:
            for span in spans:
                trace_id = span.context.trace_id if span.context else 0
                bucket = self._pending.setdefault(trace_id, [])
                bucket.append(to_stored(span))
                if span.parent is None or span.parent.is_remote:
                    finished.append(self._pending.pop(trace_id))
            while len(self._pending) > _MAX_PENDING_TRACES:
                self._pending.pop(next(iter(self._pending)))
        stream = self._stream or sys.stderr
        for bucket in finished:
            stream.write(render(build_forest(bucket)) + "\n")
        stream.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._pending.clear()
