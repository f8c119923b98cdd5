"""One trace for a session's setup traffic, instead of one trace per setup request.

A client opens a session with ``initialize``, lists the server's tools, prompts and
resources, and pings it, usually before any agent step is running: those requests
carry no trace context, so each of the proxy's SERVER spans for them was a trace of
its own, and every session added a handful of one-span traces to the backend's trace
list. Here they become children of one ``mcp session setup`` span per session (one
trace), started at the session's first such request and ended when the first request
that continues a caller's trace arrives (the agent is working now) or when the session
ends. A setup request that arrives later without context (``tools/list`` after
``notifications/tools/list_changed``) joins the same trace. Requests that carry their
caller's context keep it; a ``tools/call`` without one stays a trace of its own (it is
work, not setup).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer

from spanguard import semconv as sc
from spanguard.mcp_bridge._proxy_spans import STDIO_TRANSPORT

SETUP_SPAN_NAME = "mcp session setup"
SETUP_METHODS = frozenset({"initialize", "notifications/initialized", "ping",
                           "logging/setLevel", "tools/list", "prompts/list",
                           "resources/list", "resources/templates/list"})


class SessionSetup:
    """The setup span of one client session, created on first use."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._span: Span | None = None
        self._context: Context | None = None

    def parent(self, method: str, caller: Context | None) -> Context | None:
        """The parent for a request's span: the caller's context when it sent one (and
        the setup is then over), the session's setup span for a setup request without."""
        if caller is not None and trace.get_current_span(caller).get_span_context().is_valid:
            self.close()
            return caller
        if method not in SETUP_METHODS:
            return caller
        if self._context is None:
            self._span = self._tracer.start_span(
                SETUP_SPAN_NAME, Context(), SpanKind.INTERNAL,
                {sc.NETWORK_TRANSPORT: STDIO_TRANSPORT, sc.MCP_SESSION_SETUP: True})
            self._context = trace.set_span_in_context(self._span)
        return self._context

    def close(self) -> None:
        """End the setup span (later setup requests still join its trace)."""
        span, self._span = self._span, None
        if span is not None:
            span.end()
