"""The run status contract and where paused runs stopped: the core's side.

``spanguard.run.status`` on every root (the span tree sets it), the record of paused
runs (bounded, durable across processes when the local store holds it, failing open),
and the readers of the contract: ``traces list``, ``report`` and the tail sampler.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanContext, TraceFlags

import spanguard
from spanguard import semconv as sc
from spanguard.attributes import agent_attributes, tool_attributes
from spanguard.cli import main
from spanguard.report import build_report
from spanguard.resume import MemoryPausePoints, PausePoint, StorePausePoints, pause_points
from spanguard.sampling import TailSampler
from spanguard.spantree import SpanTree
from spanguard.store import StoredSpan, TraceStore
from spanguard.testing import SpanCapture


def ctx(span_id: int, trace_id: int = 0xABC) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))


# --- the span tree sets the status --------------------------------------------------


def _tree(cap: SpanCapture) -> SpanTree:
    return SpanTree(cap.tracer_provider.get_tracer("test"))


def test_every_root_ends_with_a_run_status(cap: SpanCapture) -> None:
    tree = _tree(cap)
    for key, how in enumerate(("ok", "error", "paused", "cancelled")):
        tree.start(key, None, f"invoke_agent {how}", agent_attributes(how))
        tree.start((key, "step"), key, "step", {})
        tree.end((key, "step"), paused=how == "paused", cancelled=how == "cancelled",
                 error=ValueError("x") if how == "error" else None)
        tree.end(key)
    statuses = {root.name: root.attributes[sc.RUN_STATUS] for root in cap.trees()}
    assert statuses == {"invoke_agent ok": "ok", "invoke_agent error": "ok",
                        "invoke_agent paused": "paused", "invoke_agent cancelled": "ok"}
    # a failed or cancelled *step* does not decide the run; the root's own end does
    errored = next(r for r in cap.trees() if r.name == "invoke_agent error")
    assert errored.children[0].span.status == "ERROR"


def test_a_cancelled_root_cancels_what_it_left_open_and_is_no_error(cap: SpanCapture) -> None:
    tree = _tree(cap)
    tree.start("root", None, "invoke_agent a", agent_attributes("a"))
    tree.start("node", "root", "node", {})
    tree.start("tool", "node", "execute_tool t", tool_attributes("t"))
    tree.end("root", cancelled=True)
    assert len(tree) == 0
    for node in cap.tree().walk():
        assert node.attributes[sc.RUN_STATUS] == "cancelled", node.name
        assert node.span.status == "UNSET" and sc.ABANDONED not in node.attributes


def test_error_and_cancellation_win_over_a_pause(cap: SpanCapture) -> None:
    tree = _tree(cap)
    for key, end in (("e", {"error": RuntimeError("late")}), ("c", {"cancelled": True})):
        tree.start(key, None, f"invoke_agent {key}", agent_attributes(key))
        tree.start((key, 1), key, "step", {})
        tree.end((key, 1), paused=True)
        tree.end(key, **end)  # type: ignore[arg-type]
    assert {r.name: r.attributes[sc.RUN_STATUS] for r in cap.trees()} == {
        "invoke_agent e": "error", "invoke_agent c": "cancelled"}


# --- where paused runs stopped ------------------------------------------------------


def test_memory_record_is_bounded_by_count_oldest_out(monkeypatch: pytest.MonkeyPatch) -> None:
    points = MemoryPausePoints(max_entries=3)
    for i in range(10):
        points.remember(f"t{i}", ctx(i + 1))
    assert len(points) == 3
    assert [points.recall(f"t{i}") is not None for i in range(10)] == [False] * 7 + [True] * 3
    points.remember("t7", ctx(99))  # a newer pause of a thread replaces its record
    assert points.recall("t7").span_id == 99  # type: ignore[union-attr]
    assert len(points) == 3


def test_memory_record_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    points = MemoryPausePoints(max_age_seconds=60)
    points.remember("old", ctx(1))
    now = time.time()
    monkeypatch.setattr("spanguard.resume.time.time", lambda: now + 61)
    assert points.recall("old") is None
    points.remember("new", ctx(2))
    assert len(points) == 1


def test_memory_record_under_threads_stays_within_its_bound() -> None:
    points = MemoryPausePoints(max_entries=100)
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(500):
            points.remember(f"{n}-{i}", ctx(i + 1))
            points.recall(f"{n}-{i - 1}")
            if i % 7 == 0:
                points.forget(f"{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(points) <= 100


def test_store_record_is_bounded_and_expires(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = TraceStore(tmp_path / "traces.db")
    points = StorePausePoints(store, max_entries=3, max_age_seconds=3600)
    for i in range(6):
        points.remember(f"t{i}", ctx(i + 1, trace_id=0xF00 + i))
    kept = [points.recall(f"t{i}") for i in range(6)]
    assert [k is not None for k in kept] == [False] * 3 + [True] * 3
    point = kept[5]
    assert point is not None and (point.trace_id, point.span_id) == (0xF05, 6)
    assert point.span_context().is_remote and point.link().attributes == {
        sc.LINK_TYPE: sc.LINK_RESUMES}
    now = time.time()
    monkeypatch.setattr("spanguard.resume.time.time", lambda: now + 3601)
    assert points.recall("t5") is None  # too old to continue
    points.remember("fresh", ctx(7))
    assert store.paused_run("t5") is None  # and pruned by the next pause


def test_store_record_is_durable_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    code = (
        "import sys\n"
        "from opentelemetry.trace import SpanContext, TraceFlags\n"
        "from spanguard.resume import StorePausePoints\n"
        "from spanguard.store import TraceStore\n"
        "points = StorePausePoints(TraceStore(sys.argv[1]))\n"
        "points.remember('hmac:thread', SpanContext(0xBEEF, 0x42, False, TraceFlags(1)))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
    point = StorePausePoints(TraceStore(path)).recall("hmac:thread")
    assert point is not None and (point.trace_id, point.span_id) == (0xBEEF, 0x42)


def test_an_unusable_store_fails_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="spanguard.resume")
    store = TraceStore(tmp_path / "traces.db")
    points = StorePausePoints(store)
    store.close()  # every statement now fails
    points.remember("t", ctx(1))
    assert points.recall("t") is None
    points.forget("t")
    assert [r.levelname for r in caplog.records if r.name == "spanguard.resume"] == [
        "WARNING", "DEBUG", "DEBUG"]


def test_the_record_follows_configure(spanguard_home: Path) -> None:
    assert isinstance(pause_points(), MemoryPausePoints)
    handle = spanguard.configure(home=spanguard_home)
    try:
        found = pause_points()
        assert isinstance(found, StorePausePoints) and found.store is handle.store
        assert pause_points() is found
    finally:
        handle.shutdown()
    spanguard.configure(home=spanguard_home, local_store=False).shutdown()
    assert isinstance(pause_points(), MemoryPausePoints)


# --- the readers: tail sampler, report, traces list ----------------------------------


def _run(tracer: Any, status: str, *, resumed_from: Any = None) -> Any:
    """A run's root and one step; a resumed run starts under the record of the paused
    root, as the adapters start it (a remote parent: the paused root ended long ago)."""
    from opentelemetry import trace

    context = None
    if resumed_from is not None:
        paused = resumed_from.get_span_context()
        context = PausePoint(paused.trace_id, paused.span_id, 1, time.time()).context()
    attrs: dict[str, Any] = {sc.RUN_STATUS: status}
    if resumed_from is not None:
        attrs[sc.RUN_RESUMED] = True
    root = tracer.start_span("invoke_agent a", context, attributes=attrs)
    child = tracer.start_span("step", trace.set_span_in_context(root))
    child.end()
    root.end()
    return root


def test_tail_sampler_keeps_pauses_and_resumptions_not_cancellations() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(TailSampler([SimpleSpanProcessor(exporter)], ratio=0.0))
    tracer = provider.get_tracer("t")
    paused = _run(tracer, "paused")
    _run(tracer, "ok", resumed_from=paused)
    _run(tracer, "cancelled")
    _run(tracer, "ok")
    kept = exporter.get_finished_spans()
    assert {s.context.trace_id for s in kept} == {paused.get_span_context().trace_id}
    assert len(kept) == 4  # both runs of the story, each with its step


def span(trace: str, span_id: str, parent: str | None, start: int, dur: int,
         attributes: dict[str, Any], status: str = "UNSET") -> StoredSpan:
    t0 = 1_700_000_000_000_000_000 + start * 1_000_000
    return StoredSpan(trace_id=trace * 32, span_id=span_id * 16,
                      parent_span_id=parent * 16 if parent else None, name="invoke_agent a",
                      kind="INTERNAL", start_time=t0, end_time=t0 + dur * 1_000_000,
                      status=status, status_message=None, attributes=attributes)


def story_spans() -> list[StoredSpan]:
    def run(status: str, totals: tuple[int, int, float], **extra: Any) -> dict[str, Any]:
        return {**agent_attributes("a"), sc.RUN_STATUS: status,
                sc.RUN_TOTAL_INPUT_TOKENS: totals[0], sc.RUN_TOTAL_OUTPUT_TOKENS: totals[1],
                sc.RUN_TOTAL_COST_USD: totals[2], **extra}

    return [
        # 1: paused, resumed (paused again), resumed to completion: one story, ok
        span("1", "a", None, 0, 100, run("paused", (10, 1, 0.1))),
        span("1", "b", "a", 5000, 20, run("paused", (0, 0, 0.0), **{sc.RUN_RESUMED: True})),
        span("1", "c", "b", 9000, 30, run("ok", (20, 2, 0.2), **{sc.RUN_RESUMED: True})),
        # 2: still waiting for a person
        span("2", "a", None, 0, 40, run("paused", (5, 1, 0.05))),
        # 3: the client went away
        span("3", "a", None, 0, 70, run("cancelled", (5, 1, 0.05))),
        # 4: failed after a resume: the story failed
        span("4", "a", None, 0, 10, run("paused", (1, 1, 0.01))),
        span("4", "b", "a", 100, 10, run("error", (1, 1, 0.01), **{
            sc.RUN_RESUMED: True, sc.ERROR_TYPE: "TimeoutError"}), "ERROR"),
    ]


def test_report_counts_pending_and_cancelled_runs_and_joins_resumed_ones() -> None:
    [group] = build_report(story_spans(), "agent")
    data = group.to_json("agent")
    assert data["runs"] == 4
    assert (data["errors"], data["pending"], data["cancelled"]) == (1, 1, 1)
    assert data["error_rate_by_type"] == {"TimeoutError": 0.25}
    # latency: the finished stories only, as the time they worked (100 + 20 + 30; 10 + 10)
    assert (data["p50_ms"], data["p95_ms"]) == (20, 150)
    assert (data["input_tokens"], data["output_tokens"]) == (42, 7)
    assert data["cost_usd"] == pytest.approx(0.42)


def test_traces_list_shows_the_latest_run_status_of_each_story(
        spanguard_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = TraceStore.in_home(spanguard_home)
    store.write(story_spans())
    store.close()
    assert main(["traces", "list", "--json"]) == 0
    rows = {row["trace_id"][0]: row for row in map(json.loads,
                                                      capsys.readouterr().out.splitlines())}
    assert {k: r["status"] for k, r in rows.items()} == {
        "1": "ok", "2": "paused", "3": "cancelled", "4": "error"}
    assert (rows["1"]["input_tokens"], rows["1"]["output_tokens"]) == (30, 3)
    assert rows["1"]["cost_usd"] == pytest.approx(0.3)
    assert main(["traces", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "STATUS" in table[0]
    assert any(line.startswith("2" * 32) and " paused " in line for line in table)
    assert main(["report", "--by", "agent"]) == 0
    report = capsys.readouterr().out.splitlines()
    assert "PEND" in report[0] and "CANC" in report[0]


def test_store_record_stays_bounded_with_processes_pausing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    TraceStore(path).close()  # the schema exists before the race starts
    code = (
        "import sys\n"
        "from opentelemetry.trace import SpanContext, TraceFlags\n"
        "from spanguard.resume import StorePausePoints\n"
        "from spanguard.store import TraceStore\n"
        "worker = int(sys.argv[2])\n"
        "points = StorePausePoints(TraceStore(sys.argv[1]), max_entries=60)\n"
        "for i in range(50):\n"
        "    points.remember(f'{worker}-{i}', SpanContext(worker + 1, i + 1, False,"
        " TraceFlags(1)))\n"
        "    assert points.recall(f'{worker}-{i}') is not None\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)],
                                stderr=subprocess.PIPE, text=True) for n in range(4)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    store = TraceStore(path)
    count = store._query("SELECT COUNT(*) FROM paused_runs", ())[0][0]
    assert 0 < count <= 60
