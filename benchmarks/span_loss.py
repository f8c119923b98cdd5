"""Spans lost vs spans counted, and what one local-store export costs, before and after.

"0.1" is the arrangement spanguard 0.1 built: the SDK's ``BatchSpanProcessor``
(its defaults: queue 2,048, batch 512) in front of the 0.1 local-store exporter,
kept below as the baseline (a ``StoredSpan`` per span, ``json.dumps`` twice,
``executemany``). "now" is ``spanguard.configure()`` with its defaults. Measured:

1. burst: N spans (default 50,000, runs of one root and nine model calls) ended
   as fast as one thread can; rows in the store counted after shutdown, against
   ``handle.dropped_spans`` (0.1: the fail-open exporter's count);
2. steady: spans at a fixed rate (default 20,000/s for 5 s), paced with sleeps;
   "b512" is "now" with the SDK's 512-span batches instead of the local store's
   2,048, the figure behind that default;
3. export: one 512-span batch into the local store, 0.1 exporter vs now, alone
   and while another thread runs a pure-Python loop (the GIL is shared), in
   alternating rounds, medians; plus the SQLite statement's share of a batch,
   which is what a dedicated writer process could take off this process's GIL.

Exit status 1 if "now" ever counts a different number of spans than it lost.

Usage: python benchmarks/span_loss.py [--spans N] [--rate R] [--seconds S] [--batches B]
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

import spanguard
from spanguard.attributes import model_attributes, usage_attributes
from spanguard.exporters.convert import to_row, to_stored
from spanguard.exporters.failopen import FailOpenExporter
from spanguard.exporters.local import LocalStoreExporter
from spanguard.exporters.redacting import RedactingExporter
from spanguard.redaction import Redactor
from spanguard.store import TraceStore

BATCH = 512


class LegacyLocalExporter(SpanExporter):
    """The 0.1 local-store export path, verbatim in effect: the baseline."""

    def __init__(self, path: Path) -> None:
        TraceStore(path).close()  # the same schema
        self.conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0,
                                    isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = [(s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_time,
                 s.end_time, s.status, s.status_message, json.dumps(s.attributes, default=str),
                 json.dumps(s.events, default=str), s.service_name)
                for s in (to_stored(span) for span in spans)]
        with self.lock:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", data)
            self.conn.execute("COMMIT")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.conn.close()


@dataclass
class Outcome:
    produced: int
    stored: int
    counted: int
    warnings: int
    seconds: float

    @property
    def lost(self) -> int:
        return self.produced - self.stored


class WarningCounter(logging.Handler):
    """Counts the log lines spanguard and the SDK emit (and keeps them off the output)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("spanguard", "opentelemetry")):
            self.count += 1


def produce(provider: TracerProvider, spans: int, rate: float | None) -> float:
    """End ``spans`` spans (runs of a root and nine model calls); seconds taken."""
    tracer = provider.get_tracer("bench")
    attrs = {**model_attributes("gpt-4o-mini", "openai"), **usage_attributes(120, 30)}
    start = time.perf_counter()
    for run in range(spans // 10):
        if rate is not None:
            delay = start + run * 10 / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        root = tracer.start_span("invoke_agent bench")
        ctx = set_span_in_context(root)
        for _ in range(9):
            tracer.start_span("chat gpt-4o-mini", ctx, attributes=attrs).end()
        root.end()
    return time.perf_counter() - start


def stored_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0])


def run_now(spans: int, rate: float | None, batch: int | None = None) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="spanguard-loss-") as home, counting() as warnings:
        handle = spanguard.configure(home=home, service_name="bench", max_export_batch_size=batch)
        seconds = produce(handle.tracer_provider, spans, rate)
        handle.shutdown()
        return Outcome(spans, stored_rows(Path(home) / "traces.db"), handle.dropped_spans,
                       warnings.count, seconds)


def run_legacy(spans: int, rate: float | None) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="spanguard-loss-") as home, counting() as warnings:
        path = Path(home) / "traces.db"
        ledger = FailOpenExporter(RedactingExporter(LegacyLocalExporter(path), Redactor()),
                                  "local store")
        provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
        provider.add_span_processor(BatchSpanProcessor(ledger))
        seconds = produce(provider, spans, rate)
        provider.shutdown()
        return Outcome(spans, stored_rows(path), ledger.dropped, warnings.count, seconds)


@contextmanager
def counting() -> Iterator[WarningCounter]:
    handler = WarningCounter()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def report_loss(title: str, outcomes: dict[str, Outcome], rate: float | None) -> bool:
    print(title)
    print(f"  {'':5} {'produced/s':>11} {'stored':>8} {'lost':>8} {'lost %':>7} "
          f"{'counted':>8} {'log lines':>9}")
    for name, o in outcomes.items():
        print(f"  {name:5} {o.produced / o.seconds:11,.0f} {o.stored:8,} {o.lost:8,} "
              f"{o.lost / o.produced * 100:6.2f}% {o.counted:8,} {o.warnings:9}")
    now = outcomes["now"]
    exact = now.counted == now.lost
    print(f"  every lost span counted (now): {'yes' if exact else 'NO'}"
          + (f"; lost {now.lost / now.produced * 100:.2f}% at {rate:,.0f} spans/s "
             f"(target <= 1%)" if rate is not None else ""))
    if rate is not None and now.produced / now.seconds < 0.95 * rate:
        print(f"  (this machine ended only {now.produced / now.seconds:,.0f} spans/s: the agent "
              "and export threads needed more GIL time than the process got)")
    return exact


def chat_spans(count: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    produce(provider, count + 9, None)  # whole runs of ten
    return list(memory.get_finished_spans())[:count]


def timed(fn: Callable[[], object], contended: bool) -> float:
    """Milliseconds for ``fn``, optionally while another thread spins in Python."""
    stop = threading.Event()
    spinner = None
    if contended:
        def spin() -> None:
            n = 0
            while not stop.is_set():
                n += 1
        spinner = threading.Thread(target=spin)
        spinner.start()
        time.sleep(0.02)
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    stop.set()
    if spinner is not None:
        spinner.join()
    return elapsed * 1e3


def export_cost(batches: int) -> None:
    spans = chat_spans(BATCH)
    with tempfile.TemporaryDirectory(prefix="spanguard-export-") as home:
        legacy = LegacyLocalExporter(Path(home) / "legacy.db")
        store = TraceStore(Path(home) / "now.db")
        now = LocalStoreExporter(store)
        rows = [to_row(span) for span in spans]
        variants: dict[str, Callable[[], object]] = {
            "0.1": lambda: legacy.export(spans), "now": lambda: now.export(spans),
            "sql": lambda: store.write_rows(rows)}
        samples: dict[tuple[str, bool], list[float]] = {
            (name, contended): [] for name in variants for contended in (False, True)}
        for _ in range(batches):
            for name, fn in variants.items():
                for contended in (False, True):
                    samples[(name, contended)].append(timed(fn, contended))
        legacy.shutdown()
        store.close()
    med = {key: statistics.median(values) for key, values in samples.items()}
    print(f"export of one {BATCH}-span batch to the local store (median of {batches}, "
          "alternating)")
    print(f"  {'':24} {'alone':>9} {'CPU-bound thread running':>26}")
    for name, label in (("0.1", "0.1 exporter"), ("now", "now (to_row, one INSERT)")):
        print(f"  {label:24} {med[(name, False)]:7.2f} ms {med[(name, True)]:24.2f} ms")
    print(f"  {'now / 0.1':24} {med[('now', False)] / med[('0.1', False)]:8.2f}x "
          f"{med[('now', True)] / med[('0.1', True)]:25.2f}x")
    share = med[("sql", False)] / med[("now", False)]
    print(f"  of which the SQLite statement: {med[('sql', False)]:.2f} ms ({share:.0%}), already "
          "outside the GIL; the rest builds rows from the SDK's spans, which a writer "
          "process would still do here (and pickle)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batches", type=int, default=15)
    args = parser.parse_args()

    burst = {"0.1": run_legacy(args.spans, None), "now": run_now(args.spans, None)}
    exact = report_loss(f"burst: {args.spans:,} spans ended as fast as one thread can",
                        burst, None)
    steady_spans = int(args.rate * args.seconds)
    steady = {"0.1": run_legacy(steady_spans, args.rate),
              "b512": run_now(steady_spans, args.rate, batch=512),
              "now": run_now(steady_spans, args.rate)}
    exact = report_loss(f"steady: {args.rate:,.0f} spans/s for {args.seconds:g} s",
                        steady, args.rate) and exact
    export_cost(args.batches)
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
