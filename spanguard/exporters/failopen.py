"""Telemetry fails open: an exporter problem never reaches the agent.

The SDK's batch processor already runs exporters off the caller's thread; this
wrapper adds the other half of the promise: an exporter that raises or reports
failure has its spans counted as dropped, and the user is told once, with the
destination and the reason, instead of a stack trace per batch.

It is also the one ledger of what its destination lost: the batch processor in
front of it (:class:`~spanguard.exporters.batching.CountedBatchSpanProcessor`)
records the spans it could not queue or deliver here too, so
``handle.dropped_spans`` and the ``spanguard.spans.dropped`` metric see every
lost span, whatever lost it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

logger = logging.getLogger("spanguard.export")

# Why spans were lost (the ``error.type`` of the spanguard.spans.dropped metric).
EXPORT_FAILED = "export_failed"
QUEUE_FULL = "queue_full"
SHUTDOWN = "shutdown"

_ADVICE = {
    EXPORT_FAILED: "the agent keeps running and dropped spans are counted "
                   "(handle.dropped_spans). Further failures to this destination are not "
                   "logged again.",
    QUEUE_FULL: "spans end faster than they are exported; the agent keeps running and "
                "spans that find the queue full are dropped and counted "
                "(handle.dropped_spans). Raise max_queue_size= (OTEL_BSP_MAX_QUEUE_SIZE) if "
                "bursts are expected. Not logged again for this destination.",
    SHUTDOWN: "spans still queued when the provider shut down, or ended after it, are "
              "counted (handle.dropped_spans). Not logged again for this destination.",
}


class FailOpenExporter(SpanExporter):
    """Wraps an exporter; counts what its destination loses and warns once per reason.

    ``kind`` is a short, low-cardinality name for metrics (``local``, ``otlp``,
    ``phoenix``...); ``destination`` is the readable one for messages.
    """

    def __init__(self, inner: SpanExporter, destination: str, kind: str = "exporter") -> None:
        self.inner = inner
        self.destination = destination
        self.kind = kind
        self.dropped = 0
        self.exported = 0
        self.dropped_by_reason: dict[str, int] = {}
        self.last_error: str | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # telemetry must never raise into the agent
            self.record_lost(len(spans), EXPORT_FAILED, f"{type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            with self._lock:
                self.exported += len(spans)
        else:
            self.record_lost(len(spans), EXPORT_FAILED, "exporter reported failure")
        return result

    def record_lost(self, count: int, reason: str, detail: str | None = None) -> None:
        """Count ``count`` spans this destination will never receive, warning once per reason.

        ``detail`` says what happened (the exception for an export failure); the
        last export failure's stays in ``last_error`` for the shutdown summary.
        """
        with self._lock:
            self.dropped += count
            self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + count
            if reason == EXPORT_FAILED:
                self.last_error = detail
            first = reason not in self._warned
            self._warned.add(reason)
        if first:
            if reason == EXPORT_FAILED:
                logger.warning("spanguard: cannot export spans to %s (%s); %s",
                               self.destination, detail, _ADVICE[reason])
            else:
                logger.warning("spanguard: spans lost on the way to %s (%s); %s",
                               self.destination, detail or reason, _ADVICE[reason])

    def summary(self) -> str:
        """``destination: N (reason[: last error]), ...`` for the shutdown message."""
        with self._lock:
            parts = [f"{count} {reason}" + (f": {self.last_error}"
                                            if reason == EXPORT_FAILED and self.last_error
                                            else "")
                     for reason, count in self.dropped_by_reason.items()]
        return f"{self.destination}: {', '.join(parts)}"

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
