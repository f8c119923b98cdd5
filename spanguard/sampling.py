"""Outcome-aware tail sampling: keep every trace that matters, a ratio of the rest.

Head sampling decides before anything happened, so it drops the rare failures
one actually needs (seed 002). This processor sits in front of the exporters'
processors, holds each trace's spans until the trace is complete in this
process (its local root has ended and no span of it is still open), and then
keeps it whole when any span shows:

- an error (status ERROR),
- a hold (``spanguard.hold.id``, or guardrail decision ``hold``),
- a refusal (guardrail decision ``deny``, e.g. a loop budget),
- a failed or unknown verification (``verification.status``),
- a user flag (``spanguard.keep = true``; :func:`spanguard.record_outcome`
  sets it on the outcome span, so an outcome recorded while the run is still
  in flight keeps the run),
- a paused run (``spanguard.run.status = paused``) or a run that resumes one
  (``spanguard.run.resumed``): the resumed run joins the paused run's trace
  later, often in another process, so both halves are kept or the story would
  have a hole where the decision was.

A cancelled run (``spanguard.run.status = cancelled``: a client went away, a
consumer stopped early, a timeout) is not an error and is kept at the ratio like
any other run.

The rest is kept at ``ratio``, decided by a seeded hash of the trace id: the
same trace gets the same answer in every process that samples it.

Memory is bounded by ``max_buffered_spans`` and ``max_trace_age_seconds``.
When either is hit, the oldest trace is decided early on what has been seen
(interesting so far, or the ratio hash): a kept trace is flushed and its later
spans pass straight through, a dropped trace's later spans (root included) are
dropped. A trace whose record aged out entirely before its root ended has its
root exported alone (a root is whole by itself; it may head a trace kept early)
and children ending after that are dropped and counted
(``orphan_spans_dropped``): no child is ever exported without its root. The
first time a limit is hit a warning says so; the counters in
:meth:`TailSampler.stats` say how often, including how many late-interesting
spans were lost to an early drop.

Downstream processors only see ``on_end`` of kept spans (``on_start`` is not
forwarded: at that point the decision is not known).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from spanguard import semconv as sc

logger = logging.getLogger("spanguard.sampling")

_MASK64 = (1 << 64) - 1
_SWEEP_EVERY = 1024
_KEEP_DECISIONS = frozenset({"hold", "deny"})
_KEEP_VERIFICATION = frozenset({"failed", "unknown"})


def is_interesting(span: ReadableSpan) -> bool:
    """True when this span alone is reason to keep its whole trace."""
    if span.status.status_code is StatusCode.ERROR:
        return True
    attrs = span.attributes
    if not attrs:
        return False
    return (attrs.get(sc.GUARDRAIL_DECISION) in _KEEP_DECISIONS
            or sc.HOLD_ID in attrs
            or attrs.get(sc.VERIFICATION_STATUS) in _KEEP_VERIFICATION
            or attrs.get(sc.KEEP) is True
            or attrs.get(sc.RUN_STATUS) == sc.RUN_STATUS_PAUSED
            or attrs.get(sc.RUN_RESUMED) is True)


def _mix64(value: int) -> int:
    """splitmix64 finaliser: spreads any 64-bit input uniformly."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


class _Trace:
    __slots__ = ("born", "decision", "interesting", "open", "root_ended", "spans")

    def __init__(self, born: float) -> None:
        self.born = born
        self.open = 0
        self.spans: list[ReadableSpan] = []
        self.interesting = False
        self.root_ended = False
        self.decision: bool | None = None


class TailSampler(SpanProcessor):
    """Wraps downstream processors (typically one batch processor per exporter)."""

    def __init__(self, downstream: Sequence[SpanProcessor], ratio: float, *, seed: int = 0,
                 max_buffered_spans: int = 50_000,
                 max_trace_age_seconds: float = 300.0) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be between 0 and 1, got {ratio!r}")
        if max_buffered_spans < 1 or max_trace_age_seconds <= 0:
            raise ValueError("max_buffered_spans and max_trace_age_seconds must be positive")
        self.downstream = tuple(downstream)
        self.ratio = ratio
        self.max_buffered_spans = max_buffered_spans
        self.max_trace_age_seconds = max_trace_age_seconds
        self._bound = min(int(ratio * (1 << 64)), 1 << 64)
        self._seed = _mix64(seed & _MASK64)
        self._traces: dict[int, _Trace] = {}  # every tracked trace, oldest first
        self._undecided: dict[int, _Trace] = {}  # those still buffering, oldest first
        self._buffered = 0
        self._ends = 0
        self._lock = threading.Lock()
        self._warned = False
        self.kept_traces = 0
        self.dropped_traces = 0
        self.early_decisions = 0
        self.orphan_spans_dropped = 0
        self.late_interesting_spans_lost = 0

    # --- decisions ---------------------------------------------------------------
    def sampled(self, trace_id: int) -> bool:
        """The ratio part of the decision: deterministic per (seed, trace id)."""
        return _mix64((trace_id & _MASK64) ^ self._seed) < self._bound

    @property
    def buffered_spans(self) -> int:
        return self._buffered

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "kept_traces": self.kept_traces,
                "dropped_traces": self.dropped_traces,
                "early_decisions": self.early_decisions,
                "orphan_spans_dropped": self.orphan_spans_dropped,
                "late_interesting_spans_lost": self.late_interesting_spans_lost,
                "buffered_spans": self._buffered,
                "tracked_traces": len(self._traces),
            }

    # --- SpanProcessor ---------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        ctx = span.context
        if ctx is None:
            return
        with self._lock:
            state = self._traces.get(ctx.trace_id)
            if state is None:
                state = self._traces[ctx.trace_id] = _Trace(time.monotonic())
                self._undecided[ctx.trace_id] = state
            state.open += 1

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        interesting = is_interesting(span)
        parent = span.parent
        is_root = parent is None or parent.is_remote
        forward: list[ReadableSpan] = []
        with self._lock:
            state = self._traces.get(ctx.trace_id)
            if state is None:
                # Started before this sampler existed, or its record was swept after
                # an early decision. A root alone is always whole (and may be the
                # root of a trace kept early), so it passes; a child cannot be
                # proven to have its root kept, so it is dropped.
                if is_root:
                    self.kept_traces += 1
                    forward.append(span)
                else:
                    self.orphan_spans_dropped += 1
            else:
                state.open -= 1
                state.interesting = state.interesting or interesting
                state.root_ended = state.root_ended or is_root
                complete = state.root_ended and state.open <= 0
                if state.decision is None:
                    state.spans.append(span)
                    self._buffered += 1
                    if complete:
                        forward = self._settle(ctx.trace_id, state)
                elif state.decision:
                    forward.append(span)
                elif interesting:
                    self.late_interesting_spans_lost += 1
                if complete:
                    del self._traces[ctx.trace_id]
            self._ends += 1
            if self._buffered > self.max_buffered_spans:
                forward.extend(self._evict_for_space())
            if self._ends % _SWEEP_EVERY == 0:
                forward.extend(self._sweep())
        for kept in forward:
            for processor in self.downstream:
                processor.on_end(kept)

    def shutdown(self) -> None:
        """Decide whatever is still buffered (on what was seen), flush, and stop downstream."""
        with self._lock:
            forward: list[ReadableSpan] = []
            for trace_id, state in list(self._undecided.items()):
                forward.extend(self._settle(trace_id, state))
            self._traces.clear()
        for kept in forward:
            for processor in self.downstream:
                processor.on_end(kept)
        for processor in self.downstream:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self.downstream)

    # --- internals (called with the lock held) --------------------------------------
    def _settle(self, trace_id: int, state: _Trace) -> list[ReadableSpan]:
        del self._undecided[trace_id]
        state.decision = keep = state.interesting or self.sampled(trace_id)
        if keep:
            self.kept_traces += 1
        else:
            self.dropped_traces += 1
        spans, state.spans = state.spans, []
        self._buffered -= len(spans)
        return spans if state.decision else []

    def _evict_for_space(self) -> list[ReadableSpan]:
        """Decide the oldest buffering traces early until the span cap holds again."""
        forward: list[ReadableSpan] = []
        early = 0
        while self._buffered > self.max_buffered_spans and self._undecided:
            trace_id, state = next(iter(self._undecided.items()))
            forward.extend(self._settle(trace_id, state))
            early += 1
        self._note_early(early)
        return forward

    def _sweep(self) -> list[ReadableSpan]:
        """Forget traces past the age limit, or the oldest past the tracked-trace limit.

        A trace still buffering is decided first (early); later spans of a
        forgotten trace are handled as described in the module docstring.
        """
        forward: list[ReadableSpan] = []
        deadline = time.monotonic() - self.max_trace_age_seconds
        early = 0
        while self._traces:
            trace_id, state = next(iter(self._traces.items()))
            if state.born >= deadline and len(self._traces) <= self.max_buffered_spans:
                break  # insertion order is age order: the rest are younger
            if state.decision is None:
                forward.extend(self._settle(trace_id, state))
                early += 1
            del self._traces[trace_id]
        self._note_early(early)
        return forward

    def _note_early(self, early: int) -> None:
        if not early:
            return
        self.early_decisions += early
        if not self._warned:
            self._warned = True
            logger.warning(
                "spanguard: tail sampler limit reached (%d buffered spans max, %.0f s max "
                "trace age): the oldest traces were decided before they completed "
                "(kept whole if interesting so far or sampled, otherwise dropped whole). "
                "Counters: TailSampler.stats(); raise max_buffered_spans or "
                "max_trace_age_seconds if this is frequent. Not logged again.",
                self.max_buffered_spans, self.max_trace_age_seconds)
