"""instrument()/uninstrument(): idempotent, and leaves LlamaIndex as it found it."""

from __future__ import annotations

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM

from spanguard.plugins import llama_index as sg_llama
from spanguard.testing import SpanCapture, capture
from tests.plugins._llama_index_fixtures import build_index, instrumented


def _handlers() -> tuple[list[object], list[object]]:
    dispatcher = get_dispatcher()
    return list(dispatcher.span_handlers), list(dispatcher.event_handlers)


def test_uninstrument_restores_the_dispatcher(cap: SpanCapture) -> None:
    before = _handlers()
    with instrumented(cap):
        during = _handlers()
        assert len(during[0]) == len(before[0]) + 1
        assert len(during[1]) == len(before[1]) + 1
    assert _handlers() == before
    assert not sg_llama.is_instrumented()


def test_instrument_twice_adds_nothing_and_records_once(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    other = capture()
    with instrumented(cap):
        handlers = _handlers()
        sg_llama.instrument(other.tracer_provider)  # ignored: already instrumented
        assert _handlers() == handlers
        engine.query("refunds?")
    assert len(cap.trees()) == 1
    assert len(cap.spans()) == 5
    assert other.spans() == []


def test_nothing_is_recorded_after_uninstrument(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(cap):
        pass
    engine.query("refunds?")
    sg_llama.uninstrument()  # a second uninstrument is harmless
    assert cap.spans() == []


def test_reinstrument_after_uninstrument_works(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(capture()):
        pass
    with instrumented(cap):
        engine.query("refunds?")
    assert cap.tree().name == "RetrieverQueryEngine"


def test_span_map_is_empty_after_many_queries(cap: SpanCapture) -> None:
    """Every kept and folded span id is released when its step ends (no leak)."""
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(cap):
        installed = sg_llama._installed
        assert installed is not None
        tree = installed.span_handler._state.tree
        for n in range(50):
            engine.query(f"question {n}")
        assert len(tree) == 0
    assert len(cap.trees()) == 50
