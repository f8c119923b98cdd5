"""Run key -> open span bookkeeping that cannot leak.

Frameworks report work as start/end callbacks keyed by a run id with a parent
run id. This module turns those into OpenTelemetry spans with the right parents,
without touching the ambient context (so concurrent runs in threads or asyncio
tasks never share or cross parents: each child names its parent explicitly).

Leaks are the known weak point of callback-based tracers: a run whose end never
arrives (a cancelled task, a crashed callback) pins its span forever. Here
everything a finished root left open is ended with it, and abandoned entries
are reaped by count and by age, so memory stays flat however long the process
lives.

Every root says how its run ended in ``spanguard.run.status``: ``ok``, ``error``,
``paused`` (an adapter reported a pause: a step ended by an interrupt that waits
for a person) or ``cancelled`` (the run was stopped from outside: a client went
away, a consumer broke out of a stream, a timeout cancelled the task). A pause and
a cancellation are not failures: their spans keep status UNSET, and what a
cancelled root left open is ended as cancelled too, not as abandoned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer

from spanguard import semconv as sc

_REAP_EVERY = 1024  # starts between two sweeps; keeps the sweep off the hot path
_INVOKE_AGENT = sc.OperationName.INVOKE_AGENT.value


class RunEntry:
    """One open span, its parent entry and its root; adapters may use ``data``."""

    __slots__ = (
        "_ctx",
        "aggregate",
        "calls",
        "cost",
        "cost_unknown",
        "data",
        "input_tokens",
        "key",
        "members",
        "output_tokens",
        "parent",
        "paused",
        "root",
        "run_attrs",
        "span",
        "started",
        "status",
    )

    def __init__(self, key: Hashable, span: Span, parent: RunEntry | None) -> None:
        self.key = key
        self.span = span
        self.parent = parent
        self.root: RunEntry = self if parent is None else parent.root
        self.started = time.monotonic()
        self.data: Any = None
        self._ctx: Context | None = None
        # Root-only state; children read it through ``self.root``.
        self.members: set[Hashable] | None = set() if parent is None else None
        self.run_attrs: dict[str, Any] | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.calls = 0
        self.cost = 0.0
        self.cost_unknown = False
        self.paused = False  # a step of the run ended by a pause (roots only)
        # An invoke_agent root: the conventions (and Langfuse) read gen_ai.usage.* on it as
        # the agent's aggregate, so it may carry the run's totals in that vocabulary too.
        self.aggregate = False
        self.status: str | None = None  # ``spanguard.run.status``, once a root has ended

    @property
    def context(self) -> Context:
        """An OpenTelemetry context with this span current (built once, on demand)."""
        if self._ctx is None:
            self._ctx = trace.set_span_in_context(self.span)
        return self._ctx

    @property
    def is_root(self) -> bool:
        return self.parent is None


class SpanTree:
    """Maps framework run keys to spans; thread- and asyncio-safe without a global lock."""

    def __init__(self, tracer: Tracer, *, max_open: int = 10_000,
                 max_age_seconds: float = 3600.0) -> None:
        if max_open < 1 or max_age_seconds <= 0:
            raise ValueError("max_open and max_age_seconds must be positive")
        self._tracer = tracer
        self._entries: dict[Hashable, RunEntry] = {}
        self._max_open = max_open
        self._max_age = max_age_seconds
        self._starts = 0
        self._reap_lock = threading.Lock()
        self.reaped = 0
        # The entry of a run key, or None: the dict's own lookup, called once or twice
        # per callback, without a Python frame around it.
        self.get: Callable[[Hashable], RunEntry | None] = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def start(
        self,
        key: Hashable,
        parent_key: Hashable | None,
        name: str,
        attributes: dict[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        start_time: int | None = None,
        run_attributes: Mapping[str, Any] | None = None,
        context: Context | None = None,
        links: Sequence[Link] | None = None,
    ) -> RunEntry:
        """Open a span under ``parent_key``'s span, or else a root.

        A root starts under ``context`` if given (a resumed run under the run it
        continues), else under the ambient context, with ``links``.
        ``run_attributes`` (roots only) are copied onto every span of the run.
        """
        parent = self._entries.get(parent_key) if parent_key is not None else None
        if parent is not None:
            return self.start_under(key, parent, name, attributes, kind=kind,
                                    start_time=start_time)
        if run_attributes:
            attributes.update(run_attributes)
        span = self._tracer.start_span(name, context, kind, attributes, links=links,
                                       start_time=start_time)
        entry = RunEntry(key, span, None)
        entry.aggregate = attributes.get(sc.GEN_AI_OPERATION_NAME) == _INVOKE_AGENT
        if run_attributes:
            entry.run_attrs = dict(run_attributes)
        self._add(key, entry)
        return entry

    def start_under(
        self,
        key: Hashable,
        parent: RunEntry,
        name: str,
        attributes: dict[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        start_time: int | None = None,
    ) -> RunEntry:
        """:meth:`start` for a caller that already holds the parent's entry (one lookup)."""
        root = parent.root
        inherited = root.run_attrs
        if inherited:
            attributes.update(inherited)
        ctx = parent._ctx
        if ctx is None:
            ctx = parent._ctx = trace.set_span_in_context(parent.span)
        entry = RunEntry(key, self._tracer.start_span(name, ctx, kind, attributes, None,
                                                      start_time), parent)
        members = root.members
        if members is not None:
            members.add(key)
        # _add, inline: this runs for every span of every run.
        entries = self._entries
        entries[key] = entry
        self._starts += 1
        if not self._starts % _REAP_EVERY or len(entries) > self._max_open:
            self._reap()
        return entry

    def _add(self, key: Hashable, entry: RunEntry) -> None:
        entries = self._entries
        entries[key] = entry
        self._starts += 1
        if not self._starts % _REAP_EVERY or len(entries) > self._max_open:
            self._reap()

    def fold(self, key: Hashable, parent_key: Hashable | None) -> RunEntry | None:
        """Make ``key`` an alias of its parent: its children attach to the parent's span.

        Used for plumbing runs (prompt templates, sequence wrappers) that a person
        would not call a step. Returns the entry the key now points at, if any.
        """
        parent = self._entries.get(parent_key) if parent_key is not None else None
        if parent is None:
            return None
        self.alias(key, parent)
        return parent

    def alias(self, key: Hashable, parent: RunEntry) -> None:
        """:meth:`fold` for a caller that already holds the parent's entry."""
        self._entries[key] = parent
        members = parent.root.members
        if members is not None:
            members.add(key)

    def end(
        self,
        key: Hashable,
        *,
        error: BaseException | None = None,
        error_type: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        end_time: int | None = None,
        paused: bool = False,
        cancelled: bool = False,
    ) -> RunEntry | None:
        """End ``key``'s span; a root also ends whatever its run left open.

        ``paused``: the step ended by pausing the run (its root ends ``paused``
        unless it fails or is cancelled). ``cancelled``: the step was stopped from
        outside; no error status, ``spanguard.run.status = cancelled``.
        Returns the entry whose span was ended, or None for an unknown key or an
        alias (a folded run has no span of its own).
        """
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        root = entry.root
        if paused:
            root.paused = True
        if entry.key != key:
            if root.members is not None:
                root.members.discard(key)
            return None
        span = entry.span
        if attributes:
            span.set_attributes(attributes)
        failed = error is not None or error_type is not None
        if cancelled:
            span.set_attribute(sc.RUN_STATUS, sc.RUN_STATUS_CANCELLED)
        elif failed:
            mark_error(span, error, error_type)
        if entry is root:
            self._close_root(entry, end_time, sc.RUN_STATUS_CANCELLED if cancelled
                             else sc.RUN_STATUS_ERROR if failed
                             else sc.RUN_STATUS_PAUSED if entry.paused else sc.RUN_STATUS_OK)
        elif root.members is not None:
            root.members.discard(key)
        span.end(end_time)
        return entry

    def add_usage(self, entry: RunEntry, input_tokens: int, output_tokens: int,
                  cost_usd: float | None) -> None:
        """Roll one model call's usage up to the run's root."""
        root = entry.root
        root.input_tokens += input_tokens
        root.output_tokens += output_tokens
        root.calls += 1
        if cost_usd is None:
            root.cost_unknown = True
        else:
            root.cost += cost_usd

    def _close_root(self, root: RunEntry, end_time: int | None, status: str) -> None:
        root.status = status
        leftovers = root.members
        if leftovers:
            cancelled = status == sc.RUN_STATUS_CANCELLED
            for key in list(leftovers):
                left = self._entries.pop(key, None)
                if left is not None and left.key == key:
                    if cancelled:
                        left.span.set_attribute(sc.RUN_STATUS, sc.RUN_STATUS_CANCELLED)
                        left.span.end(end_time)
                    else:
                        _abandon(left.span, "run ended while this step was open", end_time)
            leftovers.clear()
        if not root.calls:
            root.span.set_attribute(sc.RUN_STATUS, status)
        else:
            root.span.set_attributes(run_totals(root, status))

    def abandon_all(self, reason: str) -> int:
        """End every open span (the adapter is going away); returns how many."""
        ended = 0
        with self._reap_lock:
            for key, entry in list(self._entries.items()):
                if self._entries.pop(key, None) is not None and entry.key == key:
                    _abandon(entry.span, reason, None)
                    ended += 1
        return ended

    def _reap(self) -> None:
        """End entries past the age limit, then the oldest past the size limit."""
        if not self._reap_lock.acquire(blocking=False):
            return
        try:
            deadline = time.monotonic() - self._max_age
            excess = len(self._entries) - self._max_open
            for key, entry in list(self._entries.items()):
                if excess <= 0 and entry.started >= deadline:
                    break  # insertion order == start order: the rest are younger
                if self._entries.pop(key, None) is None:
                    continue
                excess -= 1
                self.reaped += 1
                if entry.key == key:
                    _abandon(entry.span, "reaped: no end reported for this run", None)
                if entry.root.members is not None:
                    entry.root.members.discard(key)
        finally:
            self._reap_lock.release()


def run_totals(root: RunEntry, status: str) -> dict[str, Any]:
    """What a root that made model calls says about them, in one mapping (the SDK
    validates a mapping per call, not per attribute).

    Backends sum usage and cost over a trace's model spans (Langfuse every observation's,
    Phoenix its LLM spans'), so a root that repeated them in their vocabularies
    (``llm.token_count.*``, a cost) would be counted twice: run totals are
    ``spanguard.run.*`` only, plus ``gen_ai.usage.*`` on an ``invoke_agent`` root, which the
    conventions define as the agent's aggregate and Langfuse does not add to the trace.
    """
    totals: dict[str, Any] = {
        sc.RUN_STATUS: status,
        sc.RUN_TOTAL_INPUT_TOKENS: root.input_tokens,
        sc.RUN_TOTAL_OUTPUT_TOKENS: root.output_tokens,
        sc.RUN_MODEL_CALLS: root.calls,
    }
    if root.cost_unknown:
        totals[sc.RUN_COST_UNKNOWN] = True
    else:
        totals[sc.RUN_TOTAL_COST_USD] = root.cost
    if root.aggregate:
        totals[sc.GEN_AI_USAGE_INPUT_TOKENS] = root.input_tokens
        totals[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = root.output_tokens
    return totals


def mark_error(span: Span, error: BaseException | None, error_type: str | None = None) -> None:
    """ERROR status plus ``error.type``: the two things every backend filters on."""
    kind = error_type or (type(error).__qualname__ if error is not None else "error")
    span.set_attribute(sc.ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, str(error) if error is not None else kind))
    if error is not None:
        span.record_exception(error)


def _abandon(span: Span, reason: str, end_time: int | None) -> None:
    # Status stays unset: a missing end is a bookkeeping fact, not a failure of
    # the step, and must not inflate error rates.
    span.set_attribute(sc.ABANDONED, reason)
    span.end(end_time)
