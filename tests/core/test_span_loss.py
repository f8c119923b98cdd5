"""Every span that does not reach a destination is counted, and told once.

Real SDK, real local store: the count is checked against the rows the store
holds after shutdown, never against a model of the processor.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import spanguard
from spanguard import semconv as sc
from spanguard.errors import ConfigError
from spanguard.exporters.batching import (
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    LOCAL_STORE_BATCH_SIZE,
    BatchSettings,
    batch_settings,
)
from spanguard.exporters.failopen import EXPORT_FAILED, QUEUE_FULL, SHUTDOWN
from tests.conftest import free_port

_LOSS_LOGGERS = ("spanguard", "opentelemetry.sdk")


def _produce(handle: spanguard.SpanguardHandle, count: int, name: str = "step") -> None:
    tracer = handle.tracer_provider.get_tracer("flood")
    attributes = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "gpt-4o"}
    for _ in range(count):
        with tracer.start_as_current_span(name, attributes=attributes):
            pass


def _stored_rows(home: Path) -> int:
    with sqlite3.connect(home / "traces.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0])


def _loss_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith(_LOSS_LOGGERS)]


class _Gate(SpanExporter):
    """A destination that takes nothing until released (a stalled collector)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.open.wait(30)
        self.received += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.open.set()


class _Recorder(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[int] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(len(spans))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def test_fifty_thousand_spans_at_full_speed_lose_only_what_they_count(
        spanguard_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    produced = 50_000
    with caplog.at_level(logging.INFO):
        handle = spanguard.configure()
        _produce(handle, produced)
        during = _loss_warnings(caplog)
        handle.shutdown()
    lost = produced - _stored_rows(spanguard_home)
    assert handle.dropped_spans == lost
    assert set(handle.exporters[0].dropped_by_reason) <= {QUEUE_FULL, SHUTDOWN}
    # Never one line per span: at most the one warning while losing, none from the SDK.
    assert len(during) == (1 if lost else 0)
    assert not [r for r in caplog.records if "Queue full" in r.getMessage()]


def test_a_stalled_destination_counts_every_span_its_queue_cannot_hold(
        spanguard_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    gate = _Gate()
    reader = InMemoryMetricReader()
    produced = 2_000
    with caplog.at_level(logging.INFO):
        handle = spanguard.configure(exporters=[gate], max_queue_size=100,
                                     max_export_batch_size=50,
                                     meter_provider=MeterProvider(metric_readers=[reader]))
        _produce(handle, produced)
        during = _loss_warnings(caplog)
        gate.open.set()
        handle.shutdown()
    local, stalled = handle.exporters
    assert stalled.dropped_by_reason[QUEUE_FULL] >= produced - 100 - 50
    assert stalled.dropped == produced - gate.received
    assert local.dropped == produced - _stored_rows(spanguard_home)
    assert handle.dropped_spans == local.dropped + stalled.dropped
    told = [r.getMessage() for r in during if "_Gate" in r.getMessage()]
    assert len(told) == 1 and "max_queue_size" in told[0]

    points = [point for metric in reader.get_metrics_data().resource_metrics[0]
              .scope_metrics[0].metrics if metric.name == sc.METRIC_SPANS_DROPPED
              for point in metric.data.data_points]
    by_key = {(p.attributes[sc.EXPORT_DESTINATION], p.attributes[sc.ERROR_TYPE]): p.value
              for p in points}
    assert by_key[("_Gate", QUEUE_FULL)] == stalled.dropped_by_reason[QUEUE_FULL]
    assert sum(by_key.values()) == handle.dropped_spans


def test_threads_flooding_a_small_queue_are_counted_exactly(spanguard_home: Path) -> None:
    handle = spanguard.configure(max_queue_size=256, max_export_batch_size=64)
    threads = [threading.Thread(target=_produce, args=(handle, 5_000)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handle.shutdown()
    assert handle.dropped_spans == 20_000 - _stored_rows(spanguard_home)


def test_unreachable_otlp_failures_are_counted_beside_the_local_store(
        spanguard_home: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    produced = 1_500
    with caplog.at_level(logging.WARNING, logger="spanguard"):
        handle = spanguard.configure(otlp_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces")
        _produce(handle, produced)
        handle.shutdown()
    local, otlp = handle.exporters
    assert otlp.kind == "otlp"
    assert otlp.dropped == produced
    assert set(otlp.dropped_by_reason) <= {EXPORT_FAILED, QUEUE_FULL, SHUTDOWN}
    assert otlp.dropped_by_reason[EXPORT_FAILED] > 0
    assert local.dropped == produced - _stored_rows(spanguard_home)
    assert handle.dropped_spans == local.dropped + produced
    failures = [r for r in caplog.records if "cannot export spans to otlp" in r.getMessage()]
    assert len(failures) == 1


def test_spans_ending_after_shutdown_are_counted(spanguard_home: Path) -> None:
    handle = spanguard.configure()
    _produce(handle, 3)
    handle.shutdown()
    _produce(handle, 2, name="late")
    assert _stored_rows(spanguard_home) == 3
    assert handle.exporters[0].dropped_by_reason == {SHUTDOWN: 2}
    assert handle.dropped_spans == 2


def test_unsampled_spans_are_not_losses(spanguard_home: Path) -> None:
    handle = spanguard.configure()
    tracer = handle.tracer_provider.get_tracer("t")
    parent = SpanContext(trace_id=7, span_id=9, is_remote=True, trace_flags=TraceFlags(0))
    with tracer.start_as_current_span("not sampled",
                                      context=set_span_in_context(NonRecordingSpan(parent))):
        pass
    handle.shutdown()
    assert handle.dropped_spans == 0


def test_sizes_come_from_arguments_then_otel_bsp_variables_then_defaults() -> None:
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": "4000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "300",
           "OTEL_BSP_SCHEDULE_DELAY": "250"}
    assert batch_settings(env={}) == BatchSettings(DEFAULT_MAX_QUEUE_SIZE, None, 5000)
    assert batch_settings(env=env) == BatchSettings(4000, 300, 250)
    assert batch_settings(1000, 100, env=env) == BatchSettings(1000, 100, 250)


def test_the_local_store_exports_larger_batches_than_remote_destinations_by_default() -> None:
    defaults = batch_settings(env={})
    assert defaults.for_destination("local").max_export_batch_size == LOCAL_STORE_BATCH_SIZE
    assert defaults.for_destination("otlp").max_export_batch_size == DEFAULT_MAX_EXPORT_BATCH_SIZE
    chosen = batch_settings(max_export_batch_size=64, env={})
    assert chosen.for_destination("local").max_export_batch_size == 64
    small_queue = batch_settings(max_queue_size=1000, env={})
    assert small_queue.for_destination("local").max_export_batch_size == 1000


def test_an_extra_destination_gets_batches_of_the_default_size(spanguard_home: Path) -> None:
    recorder = _Recorder()
    handle = spanguard.configure(exporters=[recorder])
    _produce(handle, 1_500)
    handle.shutdown()
    assert sum(recorder.batches) == 1_500
    assert max(recorder.batches) == DEFAULT_MAX_EXPORT_BATCH_SIZE


@pytest.mark.parametrize(("args", "env", "named"), [
    ((0, None), {}, "max_queue_size"),
    ((None, -5), {}, "max_export_batch_size"),
    ((None, None), {"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
    ((None, None), {"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY"),
])
def test_an_unusable_size_is_reported_by_name_and_the_default_used(
        args: tuple[int | None, int | None], env: dict[str, str], named: str) -> None:
    problems: list[ConfigError] = []
    settings = batch_settings(*args, env=env, report=problems.append)
    assert settings == BatchSettings()
    assert [p.source for p in problems] == [named]
    with pytest.raises(ConfigError, match=named):
        batch_settings(*args, env=env)


def test_a_batch_larger_than_the_queue_is_cut_to_the_queue() -> None:
    problems: list[ConfigError] = []
    assert batch_settings(100, 500, env={}, report=problems.append) == BatchSettings(100, 100)
    assert problems[0].source == "max_export_batch_size"
    assert "larger than the queue" in str(problems[0])


def test_configure_reports_a_bad_otel_bsp_variable_and_keeps_exporting(
        spanguard_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "-1")
    handle = spanguard.configure()
    assert any("OTEL_BSP_MAX_QUEUE_SIZE" in p for p in handle.problems)
    _produce(handle, 10)
    handle.shutdown()
    assert _stored_rows(spanguard_home) == 10
    with pytest.raises(ConfigError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        spanguard.configure(strict=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_counts_its_own_queue_not_its_parents(spanguard_home: Path) -> None:
    gate = _Gate()
    # No local store: an SQLite connection must not be used across fork().
    handle = spanguard.configure(local_store=False, exporters=[gate], max_queue_size=64,
                                 max_export_batch_size=32)
    _produce(handle, 200)  # the parent's queue for the stalled gate is full
    stalled = handle.exporters[0]
    refused_before_fork = stalled.dropped_by_reason[QUEUE_FULL]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: export its own spans, report, and leave at once
        try:
            gate.open.set()
            _produce(handle, 50)
            handle.force_flush()
            os.write(write_end, f"{gate.received} {stalled.dropped_by_reason[QUEUE_FULL]}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 60)
        report = os.read(read_end, 100).decode() if ready else ""
    finally:
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
        gate.open.set()
        handle.shutdown()
    # The child's queue starts empty: its 50 spans are admitted and exported, and
    # nothing is counted against the parent's full queue.
    assert report == f"50 {refused_before_fork}"
