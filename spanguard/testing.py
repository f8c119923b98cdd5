"""Test helpers for spanguard's own tests and for its users' tests.

``capture()`` gives a tracer provider whose spans land in memory, synchronously,
and turns them into trees to assert on::

    cap = capture()
    graph.invoke(inputs, config={"callbacks": [SpanguardCallbackHandler(
        tracer_provider=cap.tracer_provider)]})
    root = cap.tree()
    assert root.name == "invoke_agent LangGraph"
    assert root.find("execute_tool search").kind == "TOOL"
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanguard.exporters.convert import to_stored
from spanguard.store import StoredSpan
from spanguard.tree import SpanNode, build_forest, render

__all__ = ["SpanCapture", "SpanNode", "capture"]


class SpanCapture:
    """An in-memory, synchronous span sink with tree helpers."""

    def __init__(self, *processors: SpanProcessor, service_name: str = "test") -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}))
        for processor in processors:
            self.tracer_provider.add_span_processor(processor)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

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
