"""Outcome-aware tail sampling: interesting traces always, a ratio of the rest, bounded memory."""

from __future__ import annotations

import logging
import random
import time
import tracemalloc
from collections import defaultdict

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanContext, Status, StatusCode, set_span_in_context

import spanguard
from spanguard import semconv as sc
from spanguard.attributes import guardrail_attributes, tool_attributes
from spanguard.sampling import TailSampler


class SeededIds(IdGenerator):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self.rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.rng.getrandbits(128) or 1


class Recorder(SpanProcessor):
    """Keeps only ids, so memory measurements are about the sampler."""

    def __init__(self) -> None:
        self.spans: dict[int, list[tuple[int, int | None, bool]]] = defaultdict(list)

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        parent = span.parent
        is_root = parent is None or parent.is_remote
        self.spans[span.context.trace_id].append(
            (span.context.span_id, parent.span_id if parent else None, is_root))

    def assert_no_orphans(self) -> None:
        for trace_id, members in self.spans.items():
            ids = {span_id for span_id, _, _ in members}
            assert any(is_root for _, _, is_root in members), f"trace {trace_id:x} lacks its root"
            for _, parent_id, is_root in members:
                assert is_root or parent_id in ids, f"orphan child in {trace_id:x}"


def _setup(ratio: float, seed: int = 7, **kwargs: object
           ) -> tuple[TracerProvider, TailSampler, Recorder]:
    recorder = Recorder()
    sampler = TailSampler([recorder], ratio, seed=seed, **kwargs)  # type: ignore[arg-type]
    provider = TracerProvider(id_generator=SeededIds(seed))
    provider.add_span_processor(sampler)
    return provider, sampler, recorder


MARKS = {
    "error": lambda span: span.set_status(Status(StatusCode.ERROR, "boom")),
    "hold": lambda span: span.set_attributes({sc.HOLD_ID: "h-1", sc.HOLD_STATUS: "pending"}),
    "hold_decision": lambda span: span.set_attributes(guardrail_attributes("holds", "hold")),
    "deny": lambda span: span.set_attributes(guardrail_attributes("loop_budget", "deny")),
    "verification_failed": lambda span: span.set_attribute(sc.VERIFICATION_STATUS, "failed"),
    "verification_unknown": lambda span: span.set_attribute(sc.VERIFICATION_STATUS, "unknown"),
    "user_flag": lambda span: span.set_attribute(sc.KEEP, True),
}


def _run_traces(provider: TracerProvider, count: int) -> dict[int, str | None]:
    """count traces of root + 2 tool children; every 5th carries one interesting mark."""
    tracer = provider.get_tracer("test")
    marks = list(MARKS)
    kinds: dict[int, str | None] = {}
    for index in range(count):
        root = tracer.start_span("invoke_agent a")
        ctx = set_span_in_context(root)
        mark = marks[(index // 5) % len(marks)] if index % 5 == 0 else None
        for child_index in range(2):
            child = tracer.start_span("execute_tool t", ctx, attributes=tool_attributes("t"))
            if mark and child_index == 1:
                MARKS[mark](child)
            child.end()
        root.end()
        kinds[root.get_span_context().trace_id] = mark
    return kinds


def test_keeps_every_interesting_trace_whole_and_about_the_ratio_of_the_rest() -> None:
    provider, sampler, recorder = _setup(0.1)
    kinds = _run_traces(provider, 3000)
    interesting = {t for t, mark in kinds.items() if mark}
    assert {mark for mark in kinds.values() if mark} == set(MARKS)
    assert interesting <= set(recorder.spans)
    for trace_id in recorder.spans:
        assert len(recorder.spans[trace_id]) == 3
    boring = [t for t, mark in kinds.items() if not mark]
    kept_boring = sum(1 for t in boring if t in recorder.spans)
    assert 0.08 <= kept_boring / len(boring) <= 0.12
    recorder.assert_no_orphans()
    assert sampler.buffered_spans == 0
    assert sampler.stats()["kept_traces"] == len(recorder.spans)
    assert sampler.stats()["tracked_traces"] == 0


def test_ratio_decision_is_deterministic_per_seed_and_trace_id() -> None:
    rng = random.Random(3)
    trace_ids = [rng.getrandbits(128) for _ in range(5000)]
    a = TailSampler([], 0.25, seed=11)
    b = TailSampler([], 0.25, seed=11)
    c = TailSampler([], 0.25, seed=12)
    picks_a = [a.sampled(t) for t in trace_ids]
    assert picks_a == [b.sampled(t) for t in trace_ids]
    assert picks_a != [c.sampled(t) for t in trace_ids]
    assert 0.22 <= sum(picks_a) / len(picks_a) <= 0.28
    assert not any(TailSampler([], 0.0).sampled(t) for t in trace_ids)
    assert all(TailSampler([], 1.0).sampled(t) for t in trace_ids)


def test_trace_is_held_until_its_last_open_span_ends() -> None:
    provider, _, recorder = _setup(1.0)
    tracer = provider.get_tracer("test")
    root = tracer.start_span("root")
    child = tracer.start_span("child", set_span_in_context(root))
    root.end()  # a child outliving its root: still one decision for the whole trace
    assert recorder.spans == {}
    child.end()
    assert len(recorder.spans[root.get_span_context().trace_id]) == 2


_RESOURCE = Resource.get_empty()


def _span(trace_id: int, span_id: int, parent_id: int | None, error: bool = False
          ) -> ReadableSpan:
    """A finished span as the SDK hands it to processors (built directly: the flood test
    measures the sampler, not span creation)."""
    parent = SpanContext(trace_id, parent_id, is_remote=False) if parent_id else None
    status = Status(StatusCode.ERROR, "boom") if error else Status(StatusCode.UNSET)
    return ReadableSpan("s", context=SpanContext(trace_id, span_id, is_remote=False),
                        parent=parent, status=status, resource=_RESOURCE)


def test_flood_of_100k_spans_stays_bounded_and_never_exports_an_orphan(
        caplog: pytest.LogCaptureFixture) -> None:
    cap = 5_000
    recorder = Recorder()
    sampler = TailSampler([recorder], 0.1, seed=3, max_buffered_spans=cap)
    runs = 1000
    errors = {trace_id for trace_id in range(1, runs + 1) if trace_id % 50 == 0}
    tracemalloc.start()
    max_buffered = 0
    with caplog.at_level(logging.WARNING, logger="spanguard.sampling"):
        # 1,000 long-running runs, each with 99 finished children before any root ends:
        # 100,000 spans in all, 99,000 of them waiting on a root.
        for trace_id in range(1, runs + 1):
            sampler.on_start(_span(trace_id, 1, None))  # type: ignore[arg-type]
        for step in range(99):
            for trace_id in range(1, runs + 1):
                child = _span(trace_id, step + 2, 1, error=step == 0 and trace_id in errors)
                sampler.on_start(child)  # type: ignore[arg-type]
                sampler.on_end(child)
            max_buffered = max(max_buffered, sampler.buffered_spans)
        for trace_id in range(1, runs + 1):
            sampler.on_end(_span(trace_id, 1, None))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stats = sampler.stats()
    assert max_buffered <= cap
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert stats["early_decisions"] > 0
    assert stats["buffered_spans"] == 0 and stats["tracked_traces"] == 0
    assert errors <= set(recorder.spans)  # interesting-before-eviction traces survive
    for trace_id in errors:
        assert len(recorder.spans[trace_id]) == 100  # whole: 99 children + root
    kept_boring = len(set(recorder.spans) - errors) / (runs - len(errors))
    assert 0.05 <= kept_boring <= 0.15
    recorder.assert_no_orphans()
    warnings = [r for r in caplog.records if "tail sampler limit reached" in r.getMessage()]
    assert len(warnings) == 1  # said once


def test_early_drop_then_late_error_is_counted_and_the_root_is_not_exported() -> None:
    provider, sampler, recorder = _setup(0.0, max_buffered_spans=2)
    tracer = provider.get_tracer("test")
    root = tracer.start_span("root")
    ctx = set_span_in_context(root)
    for _ in range(3):
        tracer.start_span("c", ctx).end()  # the third exceeds the cap: decided (dropped) early
    late = tracer.start_span("late", ctx)
    late.set_status(Status(StatusCode.ERROR, "too late"))
    late.end()
    root.end()
    assert recorder.spans == {}
    assert sampler.stats()["late_interesting_spans_lost"] == 1
    assert sampler.stats()["dropped_traces"] == 1


def test_old_trace_is_decided_early_by_age() -> None:
    provider, sampler, recorder = _setup(0.0, max_trace_age_seconds=0.05)
    tracer = provider.get_tracer("test")
    old_root = tracer.start_span("old")
    flagged = tracer.start_span("c", set_span_in_context(old_root))
    flagged.set_attribute(sc.KEEP, True)
    flagged.end()
    time.sleep(0.1)
    for _ in range(1100):  # enough ends for a sweep
        tracer.start_span("other").end()
    assert sampler.stats()["early_decisions"] >= 1
    trace_id = old_root.get_span_context().trace_id
    assert len(recorder.spans[trace_id]) == 1  # flushed when decided
    old_root.end()  # its record aged out: the root passes alone, whole with its kept child
    assert len(recorder.spans[trace_id]) == 2
    recorder.assert_no_orphans()


def test_configure_wires_sampling_from_argument_and_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    handle = spanguard.configure()
    assert handle.sampler is None  # default 1.0: no buffering at all
    handle.shutdown()

    handle = spanguard.configure(sample_ratio=0.0)
    assert handle.sampler is not None
    tracer = handle.tracer_provider.get_tracer("test")
    tracer.start_span("boring").end()
    failing = tracer.start_span("failing")
    failing.set_status(Status(StatusCode.ERROR, "x"))
    failing.end()
    handle.force_flush()
    assert handle.store is not None
    assert [s.name for s in handle.store.spans()] == ["failing"]
    handle.shutdown()

    monkeypatch.setenv("SPANGUARD_SAMPLE_RATIO", "0.5")
    handle = spanguard.configure()
    assert handle.sampler is not None and handle.sampler.ratio == 0.5
    handle.shutdown()

    monkeypatch.setenv("SPANGUARD_SAMPLE_RATIO", "lots")
    handle = spanguard.configure()
    assert handle.sampler is None
    assert any("SPANGUARD_SAMPLE_RATIO" in p for p in handle.problems)
    handle.shutdown()
