"""The exporter's fast path (to_row + one multi-row statement) stores what to_stored describes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from spanguard.errors import StoreError
from spanguard.exporters.convert import to_row, to_stored
from spanguard.exporters.local import LocalStoreExporter
from spanguard.store import StoredRow, TraceStore, _statement_sizes

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_value = st.one_of(
    _text, st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.lists(_text, max_size=4), st.lists(st.integers(), max_size=4),
    st.lists(st.floats(allow_nan=False), max_size=4))
_attributes = st.dictionaries(st.text(min_size=1, max_size=20), _value, max_size=12)


def _spans(shapes: list[tuple[str, dict[str, object], list[dict[str, object]], str | None]]
           ) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc-ü"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("rows")
    with tracer.start_as_current_span("parent"):
        for name, attributes, events, error in shapes:
            with tracer.start_as_current_span(name, attributes=attributes,  # type: ignore[arg-type]
                                              record_exception=False,
                                              set_status_on_exception=False) as span:
                for event in events:
                    span.add_event("event", event)  # type: ignore[arg-type]
                if error is not None:
                    span.set_status(Status(StatusCode.ERROR, error))
    return list(memory.get_finished_spans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_text, _attributes, st.lists(_attributes, max_size=2),
                          st.none() | _text), min_size=1, max_size=6))
def test_rows_written_in_one_statement_read_back_as_to_stored_describes(
        shapes: list[tuple[str, dict[str, object], list[dict[str, object]], str | None]]
) -> None:
    spans = _spans(shapes)
    with tempfile.TemporaryDirectory() as home:  # hypothesis repeats ids across examples
        store = TraceStore(Path(home) / "rows.db")
        try:
            LocalStoreExporter(store).export(spans)
            trace_id = format(spans[0].context.trace_id, "032x")  # type: ignore[union-attr]
            stored = {s.span_id: s for s in store.trace(trace_id)}
        finally:
            store.close()
    assert len(stored) == len(spans)
    for span in spans:
        expected = to_stored(span)
        assert stored[expected.span_id] == expected


def test_a_batch_beyond_one_statement_is_written_whole(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "big.db")
    rows = [_row(i) for i in range(6_000)]  # 4,096 + 1,024 + 512 + ... rows per statement
    assert store.write_rows(rows) == 6_000
    assert len(store.spans()) == 6_000


@given(st.integers(min_value=1, max_value=20_000),
       st.sampled_from([1, 2, 64, 1024, 2048, 4096]))
def test_statement_sizes_cover_the_batch_with_few_distinct_statements(count: int,
                                                                      largest: int) -> None:
    sizes = _statement_sizes(count, largest)
    assert sum(sizes) == count
    assert all(size <= largest and size & (size - 1) == 0 for size in sizes)
    assert len(sizes) <= count // largest + largest.bit_length()


def test_a_failing_row_leaves_nothing_of_its_batch(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "atomic.db")
    rows = [_row(i) for i in range(6_000)]
    broken = list(rows[5_500])
    broken[3] = None  # name is NOT NULL: a later statement of the batch fails
    rows[5_500] = tuple(broken)  # type: ignore[assignment]
    with pytest.raises(StoreError, match="write failed"):
        store.write_rows(rows)
    assert store.spans() == []
    assert store.write_rows(rows[:10]) == 10  # and the store is usable afterwards


def test_a_value_sqlite_cannot_bind_rolls_back_the_whole_batch(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "unbindable.db")
    rows = [_row(i) for i in range(6_000)]
    broken = list(rows[5_999])
    broken[3] = "name \ud800"  # not UTF-8: the last statement of the batch cannot bind it
    rows[5_999] = tuple(broken)  # type: ignore[assignment]
    with pytest.raises(UnicodeEncodeError):
        store.write_rows(rows)
    assert store.spans() == []
    assert store.write_rows(rows[:10]) == 10
    store.close()
    assert len(TraceStore(tmp_path / "unbindable.db").spans()) == 10  # committed, not pending


def test_a_lone_surrogate_in_a_name_does_not_cost_the_batch(tmp_path: Path) -> None:
    spans = _spans([("ok", {}, [], None), ("bad \ud800 name", {}, [], "bad \udfff status"),
                    ("fine", {"k": "v \ud800"}, [], None)])
    store = TraceStore(tmp_path / "surrogate.db")
    LocalStoreExporter(store).export(spans)
    names = sorted(s.name for s in store.spans())
    assert names == ["bad ? name", "fine", "ok", "parent"]
    assert next(s for s in store.spans() if s.name == "fine").attributes == {"k": "v \ud800"}


def _row(i: int) -> StoredRow:
    return (f"{1:032x}", f"{i + 1:016x}", None, f"span {i}", "INTERNAL", i, i + 1, "UNSET",
            None, "{}", "[]", "svc")


def test_to_row_matches_to_stored_for_a_plain_span() -> None:
    span = _spans([("plain", {"a": (1, 2), "b": "x"}, [{"e": 1}], "boom")])[0]
    row = to_row(span)
    stored = to_stored(span)
    assert row[:9] == (stored.trace_id, stored.span_id, stored.parent_span_id, stored.name,
                       stored.kind, stored.start_time, stored.end_time, stored.status,
                       stored.status_message)
    assert row[9] == '{"a":[1,2],"b":"x"}'
