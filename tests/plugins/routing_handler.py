"""A minimal tracing handler that honours ResilientChatModel's contract.

The real one is ``SpanguardCallbackHandler`` (built elsewhere); this one holds
exactly the contract's parts, so the wrapper's tests do not depend on it and the
lead can read here what the real handler must do.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from opentelemetry.trace import TracerProvider

from spanguard.attributes import (
    KIND_CHAIN,
    KIND_TOOL,
    chat_span_name,
    model_attributes,
    tool_span_name,
)
from spanguard.guardrails import ModelCall
from spanguard.guardrails.transient import classify
from spanguard.plugins.resilient import (
    attempt_attributes,
    attempt_is_retry,
    error_routing_attributes,
    is_router_run,
    routing_attributes,
)
from spanguard.spantree import SpanTree


class RoutingAwareHandler(BaseCallbackHandler):
    raise_error = True

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.tree = SpanTree(tracer_provider.get_tracer("test"))
        # What the loop-budget guard would be asked about: attempts only, never the wrapper.
        self.model_calls: list[ModelCall] = []

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "chain"
        self.tree.start(run_id, parent_run_id, name, dict(KIND_CHAIN))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id, error=error)

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        model = (metadata or {}).get("ls_model_name")
        attrs = model_attributes(model)
        attrs.update(attempt_attributes(metadata))
        self.tree.start(run_id, parent_run_id, chat_span_name(model), attrs)
        if not is_router_run(metadata):
            self.model_calls.append(ModelCall(model, is_retry=attempt_is_retry(metadata)))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id, attributes=routing_attributes(response))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id, error=error, error_type=classify(error).reason,
                      attributes=error_routing_attributes(error))

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        name = (serialized or {}).get("name") or "tool"
        self.tree.start(run_id, parent_run_id, tool_span_name(name), dict(KIND_TOOL))

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id)
