"""Telemetry fails open: an exporter problem never reaches the agent.

The SDK's batch processor already runs exporters off the caller's thread; this
wrapper adds the other half of the promise: an exporter that raises or reports
failure has its spans counted as dropped, and the user is told once, with the
destination and the reason, instead of a stack trace per batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

logger = logging.getLogger("spanguard.export")


class FailOpenExporter(SpanExporter):
    """Wraps an exporter; counts what it drops and warns once per destination."""

    def __init__(self, inner: SpanExporter, destination: str) -> None:
        self.inner = inner
        self.destination = destination
        self.dropped = 0
        self.exported = 0
        self.last_error: str | None = None
        self._warned = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # telemetry must never raise into the agent
            self._drop(len(spans), f"{type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            with self._lock:
                self.exported += len(spans)
        else:
            self._drop(len(spans), "exporter reported failure")
        return result

    def _drop(self, count: int, reason: str) -> None:
        with self._lock:
            self.dropped += count
            self.last_error = reason
            first = not self._warned
            self._warned = True
        if first:
            logger.warning(
                "spanguard: cannot export spans to %s (%s); the agent keeps running and "
                "dropped spans are counted (handle.dropped_spans). Further failures to this "
                "destination are not logged again.", self.destination, reason)

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception as exc:
            logger.debug("spanguard: exporter %s shutdown failed: %s", self.destination, exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.inner.force_flush(timeout_millis)
        except Exception:
            return False
