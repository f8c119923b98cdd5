"""Make a tool's span the active OpenTelemetry context while the tool body runs.

Code called inside a tool (a LlamaIndex query engine, an MCP client call) starts
its spans under whatever span is current, so ``execute_tool`` must be current
for exactly the tool's lifetime. LangChain gives no hook around the body, only
``on_tool_start``/``on_tool_end``; both are called, for sync and async tools, from
the same context: the sync path calls them around ``context.run(tool._run)``,
the async path awaits them (inline, for a ``run_inline`` handler) in the task
that awaits the tool. The body itself runs in a copy of the context taken after
``on_tool_start``, so it sees the span.

A ``contextvars`` token can only be reset in the Context that created it. If a
future LangChain ever reported the end from another context (a new task), the
reset is skipped rather than corrupting that other context: the attaching
context then dies with its task, which in LangGraph is the per-tool-call task.
"""

from __future__ import annotations

import contextvars

from opentelemetry import context as otel_context
from opentelemetry.context import Context


def activate(ctx: Context) -> object:
    """Attach ``ctx``; returns the token for :func:`deactivate`."""
    return otel_context.attach(ctx)


def deactivate(token: object) -> bool:
    """Undo :func:`activate`; False when called from a different Context (no change)."""
    if isinstance(token, contextvars.Token):
        try:
            token.var.reset(token)
        except (ValueError, RuntimeError):
            return False
        return True
    otel_context.detach(token)  # type: ignore[arg-type]  # non-contextvars runtime context
    return True
