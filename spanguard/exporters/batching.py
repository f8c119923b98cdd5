"""Batch export in which every span that does not reach its destination is counted.

The SDK's ``BatchSpanProcessor`` drops a span when its queue is full and only
logs it ("Queue full, dropping Span.", thinned by a 20 s duplicate filter); it
keeps no count a caller can read (its ``otel.sdk.processor.span.processed``
metric is opt-in, SDK-internal and per processor, not per handle). Spans still
queued when shutdown gives up, or ending after it, vanish the same way.

:class:`CountedBatchSpanProcessor` keeps the SDK's batching, worker thread,
fork handling and ``OTEL_BSP_*`` semantics by subclassing it through its public
surface only (constructor, ``on_end``, ``shutdown``): it admits spans itself.
It knows how many spans it handed to the SDK that the exporter has not yet
received; a span that would take that number past the queue's capacity is
refused and counted (``queue_full``) instead of being handed over, so the SDK's
queue, built with the same capacity, never overflows on its own. What is still
waiting when shutdown returns, and what ends after it, is counted as
``shutdown``. The counts go to the destination's :class:`FailOpenExporter`,
which already counts export failures: one ledger per destination.

Sizes (:func:`batch_settings`): the local store exports 2,048 spans at a time,
other destinations the SDK's 512 (what OTLP collectors expect in one request).
Under GIL contention a batch costs its conversion plus two waits for the GIL
(waking the worker, and returning from SQLite, which releases it), up to the
5 ms switch interval each, so larger batches are what keeps the local store
ahead of a busy agent; the queue (8,192 spans, ~3 KB each without content)
holds four of them. docs/governance.md ("Lost spans") has the figures.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from spanguard.errors import ConfigError
from spanguard.exporters.failopen import QUEUE_FULL, SHUTDOWN, FailOpenExporter

DEFAULT_MAX_QUEUE_SIZE = 8192
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512  # the SDK's
LOCAL_STORE_BATCH_SIZE = 2048
DEFAULT_SCHEDULE_DELAY_MILLIS = 5000  # the SDK's


@dataclass(frozen=True)
class BatchSettings:
    """Queue capacity, spans per export call, and the longest wait before an export.

    ``max_export_batch_size`` None means each destination's default
    (:meth:`for_destination`).
    """

    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_export_batch_size: int | None = None
    schedule_delay_millis: int = DEFAULT_SCHEDULE_DELAY_MILLIS

    def for_destination(self, kind: str) -> BatchSettings:
        """These settings with a batch size: the one given, else the destination's default."""
        default = LOCAL_STORE_BATCH_SIZE if kind == "local" else DEFAULT_MAX_EXPORT_BATCH_SIZE
        size = self.max_export_batch_size or default
        return replace(self, max_export_batch_size=min(size, self.max_queue_size))


def batch_settings(max_queue_size: int | None = None, max_export_batch_size: int | None = None,
                   *, env: Mapping[str, str] | None = None,
                   report: Callable[[ConfigError], None] | None = None) -> BatchSettings:
    """Arguments, then ``OTEL_BSP_MAX_QUEUE_SIZE`` / ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` /
    ``OTEL_BSP_SCHEDULE_DELAY``, then spanguard's defaults.

    An unusable value is reported (``report``, else raised) and its default used;
    a batch larger than the queue is cut to the queue's size.
    """
    env = os.environ if env is None else env

    def fail(exc: ConfigError) -> None:
        if report is None:
            raise exc
        report(exc)

    queue = _positive(max_queue_size, "max_queue_size", OTEL_BSP_MAX_QUEUE_SIZE, env, fail,
                      f"using {DEFAULT_MAX_QUEUE_SIZE}") or DEFAULT_MAX_QUEUE_SIZE
    batch = _positive(max_export_batch_size, "max_export_batch_size",
                      OTEL_BSP_MAX_EXPORT_BATCH_SIZE, env, fail,
                      "using the destination's default")
    delay = _positive(None, "schedule_delay_millis", OTEL_BSP_SCHEDULE_DELAY, env, fail,
                      f"using {DEFAULT_SCHEDULE_DELAY_MILLIS}") or DEFAULT_SCHEDULE_DELAY_MILLIS
    if batch is not None and batch > queue:
        fail(ConfigError("max_export_batch_size", f"{batch} is larger than the queue ({queue})",
                         f"using {queue}: a batch cannot hold more than the queue"))
        batch = queue
    return BatchSettings(queue, batch, delay)


def _positive(explicit: int | None, argument: str, variable: str, env: Mapping[str, str],
              fail: Callable[[ConfigError], None], fallback: str) -> int | None:
    """The argument, else the variable, as a positive int; None when unset or unusable."""
    source, value = argument, explicit
    if value is None:
        text = env.get(variable, "").strip()
        if not text:
            return None
        source = variable
        try:
            value = int(text)
        except ValueError:
            fail(ConfigError(source, f"{text!r} is not an integer", fallback))
            return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(ConfigError(source, f"{value!r} is not a positive integer", fallback))
        return None
    return value


class CountedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor; spans it cannot deliver are counted in ``exporter``."""

    def __init__(self, exporter: FailOpenExporter,
                 settings: BatchSettings | None = None) -> None:
        settings = settings or BatchSettings()
        batch = settings.max_export_batch_size or DEFAULT_MAX_EXPORT_BATCH_SIZE
        self._ledger = exporter
        self._capacity = settings.max_queue_size
        self._lock = threading.Lock()
        self._waiting = 0  # handed to the SDK, not yet received by the exporter
        self._closed = False
        super().__init__(_Handoff(exporter, self._received),
                         max_queue_size=settings.max_queue_size,
                         max_export_batch_size=min(batch, settings.max_queue_size),
                         schedule_delay_millis=settings.schedule_delay_millis)
        if hasattr(os, "register_at_fork"):
            reinit = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(reinit))

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if not (context and context.trace_flags.sampled):
            return  # the SDK exports sampled spans only: not a loss
        with self._lock:
            closed = self._closed
            admitted = not closed and self._waiting < self._capacity
            if admitted:
                self._waiting += 1
        if admitted:
            super().on_end(span)
        elif closed:
            self._ledger.record_lost(1, SHUTDOWN, "span ended after shutdown")
        else:
            self._ledger.record_lost(1, QUEUE_FULL,
                                     f"export queue full at {self._capacity} spans")

    def shutdown(self) -> None:
        """Export what is queued (the SDK's shutdown), then count what it left behind."""
        super().shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK
        with self._lock:
            self._closed = True
            left, self._waiting = self._waiting, 0
        if left:
            self._ledger.record_lost(left, SHUTDOWN, "still queued when shutdown ended")

    def _received(self, count: int) -> bool:
        """The SDK hands ``count`` spans to the exporter; False once they were counted lost."""
        with self._lock:
            if self._closed:
                return False
            self._waiting -= count
            return True

    def _after_fork_in_child(self) -> None:
        # The SDK empties its queue in a forked child (the parent exports those
        # spans); the count of what waits in it starts over with it.
        self._lock = threading.Lock()
        self._waiting = 0


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


class _Handoff(SpanExporter):
    """Tells the processor a batch left the queue, then exports it through the ledger."""

    def __init__(self, inner: FailOpenExporter, received: Callable[[int], bool]) -> None:
        self._inner = inner
        self._received = received

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self._received(len(spans)):
            return SpanExportResult.FAILURE  # counted when shutdown gave up on them
        return self._inner.export(spans)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
