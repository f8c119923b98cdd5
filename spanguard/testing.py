"""Test helpers for spanguard's own tests and for its users' tests.

``capture()`` gives a tracer provider whose spans land in memory, synchronously,
and turns them into trees to assert on::

    cap = capture()
    graph.invoke(inputs, config={"callbacks": [SpanguardCallbackHandler(
        tracer_provider=cap.tracer_provider)]})
    root = cap.tree()
    assert root.name == "invoke_agent LangGraph"
    assert root.find("execute_tool search").kind == "TOOL"
    assert cap.unended() == []   # every span that started has ended

Spans are kept when they end, so a span that never ends would be invisible to
the tree helpers; :class:`SpanLedger` (part of every capture) records starts and
ends, and ``unended()`` names what was started and never ended: a leak.
"""

from __future__ import annotations

import threading

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanguard.exporters.convert import to_stored
from spanguard.store import StoredSpan
from spanguard.tree import SpanNode, build_forest, render

__all__ = ["SpanCapture", "SpanLedger", "SpanNode", "capture"]


class SpanLedger(SpanProcessor):
    """Every span started and not yet ended, by span id: what a leak leaves behind."""

    def __init__(self) -> None:
        self._open: dict[int, str] = {}
        self._lock = threading.Lock()
        self.started = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        with self._lock:
            self._open[span.context.span_id] = span.name
            self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None:
            with self._lock:
                self._open.pop(span.context.span_id, None)

    def unended(self) -> list[str]:
        """Names of the spans started and never ended, in start order."""
        with self._lock:
            return list(self._open.values())


class SpanCapture:
    """An in-memory, synchronous span sink with tree helpers and a leak ledger."""

    def __init__(self, *processors: SpanProcessor, service_name: str = "test") -> None:
        self.exporter = InMemorySpanExporter()
        self.ledger = SpanLedger()
        self.tracer_provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}))
        self.tracer_provider.add_span_processor(self.ledger)
        for processor in processors:
            self.tracer_provider.add_span_processor(processor)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def unended(self) -> list[str]:
        """Spans started and never ended (empty when nothing leaked)."""
        return self.ledger.unended()

    def spans(self) -> list[StoredSpan]:
        return [to_stored(span) for span in self.exporter.get_finished_spans()]

    def trees(self) -> list[SpanNode]:
        """One root per trace (a span whose parent was not captured counts as a root)."""
        return build_forest(self.spans())

    def tree(self) -> SpanNode:
        """The single tree captured; fails loudly if there are zero or several."""
        roots = self.trees()
        if len(roots) != 1:
            raise AssertionError(f"expected one span tree, got {len(roots)}:\n"
                                 + render(roots))
        return roots[0]

    def names(self) -> list[str]:
        return [span.name for span in self.spans()]

    def render(self) -> str:
        return render(self.trees())

    def clear(self) -> None:
        self.exporter.clear()


def capture(*processors: SpanProcessor, service_name: str = "test") -> SpanCapture:
    return SpanCapture(*processors, service_name=service_name)
