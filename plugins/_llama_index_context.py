"""Where a LlamaIndex run's root starts: the caller's context, never a peer's mirror of it.

Another LlamaIndex instrumentor (OpenInference's ``LlamaIndexInstrumentor``,
OpenLLMetry's) makes its own span for each LlamaIndex operation the current
OpenTelemetry span while the operation runs. A spanguard root started under the
ambient context would then be a child of the peer's copy of the same operation when
the peer registered first, and a sibling when it registered second: the trees would
mix, depending on import order.

spanguard keeps its trees separate whatever the order: its handlers go first in the
dispatcher (so the peer's span for the *same* operation is not yet current when
spanguard's starts), and a root whose ambient span still belongs to a LlamaIndex
instrumentor (an operation spanguard did not see start, an async task that lost the
dispatcher's parent) starts under that span's parent instead: where the operation
itself was called from (your span, or the agent's ``execute_tool``). Both trees then
sit side by side under the same parent, in the same trace.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan


def is_llama_index_peer(scope_name: str | None, own: str) -> bool:
    """An instrumentation scope of another LlamaIndex instrumentor."""
    if not scope_name or scope_name == own:
        return False
    flat = scope_name.lower().replace("_", "").replace("-", "").replace(".", "")
    return "llamaindex" in flat


def root_context(own_scope: str) -> Context | None:
    """The context a new root starts under; None: the ambient one as it is (cheapest)."""
    span = trace.get_current_span()
    scope = getattr(span, "instrumentation_scope", None)
    if not is_llama_index_peer(getattr(scope, "name", None), own_scope):
        return None
    current = otel_context.get_current()
    parent = getattr(span, "parent", None)
    if parent is None:  # the peer's span is a root: so is ours (in a trace of its own)
        return trace.set_span_in_context(trace.INVALID_SPAN, current)
    return trace.set_span_in_context(NonRecordingSpan(parent), current)
