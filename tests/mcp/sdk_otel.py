"""The MCP SDK's spans go to the *global* tracer provider; tests need to see them.

OpenTelemetry lets a process set the global provider once, so every MCP test
shares one :class:`SpanCapture` installed globally (or listening on an SDK
provider that something else installed first), cleared before each test.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from spanguard.testing import SpanCapture, capture

_capture: SpanCapture | None = None


def global_capture() -> SpanCapture:
    """The process-wide capture of the global provider, emptied."""
    global _capture
    if _capture is None:
        cap = capture(service_name="mcp-tests")
        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            existing.add_span_processor(SimpleSpanProcessor(cap.exporter))
            cap.tracer_provider = existing
        else:
            trace.set_tracer_provider(cap.tracer_provider)
        _capture = cap
    _capture.clear()
    return _capture


def finished(cap: SpanCapture, name: str) -> list[ReadableSpan]:
    """Raw finished spans named ``name`` (with kind and instrumentation scope)."""
    return [s for s in cap.exporter.get_finished_spans() if s.name == name]
