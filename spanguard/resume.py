"""Where a paused run stopped, so that the run resuming it continues the same trace.

An agent that waits for a person (a LangGraph ``interrupt()``: a hold, a
human-in-the-loop review) ends its run with ``spanguard.run.status = paused``; the
answer comes later, often hours later and in another process, as a new run on the
same thread (``Command(resume=...)``). An adapter records the paused root's span
context under the thread (:meth:`PausePoints.remember`) and, when a run resumes that
thread, starts the new root as a child of it with a link to it
(:meth:`PausePoint.context`, :meth:`PausePoint.link`): pause, decision and resume
are one trace.

The record is keyed by a keyed hash of the thread id (never the raw id) and is
bounded by count and age. It lives in the local store's SQLite file when
:func:`spanguard.configure` opened one (durable across processes that share a
``SPANGUARD_HOME``), else in a bounded map in this process. When the record is
gone (older than ``max_age_seconds``, pushed out by ``max_entries`` newer pauses,
or kept in memory by a process that has exited) the resumed run starts a new
trace: spanguard cannot link what it no longer knows; the new root still carries
``spanguard.run.resumed = true`` so that it is not mistaken for a fresh request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags

from spanguard import semconv as sc
from spanguard.errors import StoreError
from spanguard.store import TraceStore

__all__ = ["MemoryPausePoints", "PausePoint", "PausePoints", "StorePausePoints",
           "pause_points"]

logger = logging.getLogger("spanguard.resume")

MAX_ENTRIES = 10_000
MAX_AGE_SECONDS = 30 * 86_400.0  # an approval queue left for a month is a different story


@dataclass(frozen=True)
class PausePoint:
    """The root span of a paused run, and when it paused (seconds since the epoch)."""

    trace_id: int
    span_id: int
    trace_flags: int
    paused_at: float

    def span_context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, is_remote=True,
                           trace_flags=TraceFlags(self.trace_flags))

    def context(self) -> Context:
        """A context whose current span is the paused root: the resumed root's parent."""
        return trace.set_span_in_context(NonRecordingSpan(self.span_context()))

    def link(self) -> Link:
        return Link(self.span_context(), {sc.LINK_TYPE: sc.LINK_RESUMES})


class PausePoints(Protocol):
    """Thread key -> where its paused run stopped."""

    def remember(self, key: str, span: SpanContext) -> None: ...

    def recall(self, key: str) -> PausePoint | None: ...

    def forget(self, key: str) -> None: ...


class MemoryPausePoints:
    """In this process only, bounded by count (oldest out first) and by age."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES,
                 max_age_seconds: float = MAX_AGE_SECONDS) -> None:
        if max_entries < 1 or max_age_seconds <= 0:
            raise ValueError("max_entries and max_age_seconds must be positive")
        self.max_entries = max_entries
        self.max_age_seconds = max_age_seconds
        self._points: OrderedDict[str, PausePoint] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._points)

    def remember(self, key: str, span: SpanContext) -> None:
        point = PausePoint(span.trace_id, span.span_id, int(span.trace_flags), time.time())
        with self._lock:
            points = self._points
            points.pop(key, None)
            points[key] = point
            deadline = point.paused_at - self.max_age_seconds
            while points and (len(points) > self.max_entries
                              or next(iter(points.values())).paused_at < deadline):
                points.popitem(last=False)

    def recall(self, key: str) -> PausePoint | None:
        with self._lock:
            point = self._points.get(key)
            if point is not None and point.paused_at < time.time() - self.max_age_seconds:
                del self._points[key]
                return None
            return point

    def forget(self, key: str) -> None:
        with self._lock:
            self._points.pop(key, None)


class StorePausePoints:
    """In the local store's SQLite file: shared by the processes of one machine.

    Telemetry fails open: a store that cannot be read or written is logged (once
    at warning level) and the run is traced as if nothing had been recorded.
    """

    def __init__(self, store: TraceStore, *, max_entries: int = MAX_ENTRIES,
                 max_age_seconds: float = MAX_AGE_SECONDS) -> None:
        if max_entries < 1 or max_age_seconds <= 0:
            raise ValueError("max_entries and max_age_seconds must be positive")
        self.store = store
        self.max_entries = max_entries
        self.max_age_seconds = max_age_seconds
        self._warned = False

    def remember(self, key: str, span: SpanContext) -> None:
        try:
            self.store.remember_pause(key, format(span.trace_id, "032x"),
                                      format(span.span_id, "016x"), int(span.trace_flags),
                                      max_entries=self.max_entries,
                                      max_age_seconds=self.max_age_seconds)
        except StoreError:
            self._failed("record where a run paused")

    def recall(self, key: str) -> PausePoint | None:
        try:
            found = self.store.paused_run(key)
        except StoreError:
            self._failed("read where a run paused")
            return None
        if found is None:
            return None
        trace_id, span_id, flags, paused_at = found
        if paused_at < time.time() - self.max_age_seconds:
            return None
        return PausePoint(int(trace_id, 16), int(span_id, 16), flags, paused_at)

    def forget(self, key: str) -> None:
        try:
            self.store.forget_pause(key)
        except StoreError:
            self._failed("forget where a run paused")

    def _failed(self, what: str) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(level, "spanguard: could not %s in %s; a resumed run may start a new "
                   "trace", what, self.store.path, exc_info=True)


_memory = MemoryPausePoints()
_by_store: dict[int, StorePausePoints] = {}
_by_store_lock = threading.Lock()


def pause_points() -> PausePoints:
    """The local store's record when :func:`spanguard.configure` opened one, else this
    process's bounded map. Resolved per call: a later ``configure()`` is followed."""
    from spanguard.config import current_store  # the config module imports the exporters

    store = current_store()
    if store is None:
        return _memory
    with _by_store_lock:
        found = _by_store.get(id(store))
        if found is None or found.store is not store:
            if len(_by_store) >= 16:
                _by_store.clear()
            found = _by_store[id(store)] = StorePausePoints(store)
        return found
