"""LangChain / LangGraph plugin: one span tree per agent run, plus the guardrail hooks.

::

    from spanguard.plugins.langchain import SpanguardCallbackHandler
    handler = SpanguardCallbackHandler()        # or (tracer_provider=..., policy=...)
    graph.invoke(inputs, config={"callbacks": [handler]})

The top-level run becomes ``invoke_agent {name}``; LangGraph nodes become CHAIN
spans named after the node; model, tool and retriever runs become ``chat``,
``execute_tool`` and ``retrieval`` spans. Plumbing runs (prompt templates,
sequence wrappers, routing functions, LangGraph's hidden ``__start__``/writers)
are folded into their parent so the tree shows what a person thinks happened.

One handler serves any number of concurrent runs, sync or async: it is
``run_inline``, so LangChain calls it in the caller's thread or task instead of
shipping each callback to a thread pool, and its bookkeeping is keyed by run id
(:class:`~spanguard.spantree.SpanTree`), never by ambient state. Telemetry
fails open: every callback body is guarded and a bug in it is logged, never
raised. Enforcement fails closed: the handler sets ``raise_error`` so that a
guard's refusal (and only the guardrail hooks) propagates and stops the step
before the model or tool is invoked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import metrics, trace
from opentelemetry.trace import Span

from spanguard import __version__
from spanguard import config as sg_config
from spanguard import semconv as sc
from spanguard.attributes import (
    KIND_CHAIN,
    agent_attributes,
    agent_span_name,
    chat_span_name,
    cost_attributes,
    model_attributes,
    retrieval_attributes,
    retrieval_span_name,
    run_identity_attributes,
    tool_attributes,
    tool_span_name,
    usage_attributes,
)
from spanguard.guardrails import (
    Enforcer,
    Guard,
    GuardrailViolation,
    ModelCall,
    ModelUsage,
    Policy,
    RunState,
    ToolCall,
    ToolOutcome,
    load_policy,
    record_verification,
    verification_of,
)
from spanguard.guardrails.gating import GatedCall, gate_for
from spanguard.guardrails.holds import HoldPending
from spanguard.guardrails.transient import classify, error_usage
from spanguard.hashing import KeyedHasher, canonical_json, payload_hash
from spanguard.plugins._langchain_content import (
    capture_from_env,
    input_message_attributes,
    output_message_attributes,
    value_text,
)
from spanguard.plugins._langchain_context import activate, deactivate
from spanguard.plugins._langchain_extract import (
    Response,
    Usage,
    document_ids,
    request_key,
    request_model,
    request_parameters,
)
from spanguard.plugins._langchain_fold import is_plumbing
from spanguard.plugins._langchain_quiet import install as install_refusal_filter
from spanguard.plugins._langchain_quiet import note_refusal
from spanguard.plugins.resilient import (
    META_ATTEMPT,
    META_ROUTER,
    ResilientChatModel,
    attempt_attributes,
    attempt_is_retry,
    error_routing_attributes,
    is_router_run,
    routing_attributes,
)
from spanguard.pricing import PriceTable
from spanguard.spantree import RunEntry, SpanTree

if TYPE_CHECKING:
    import os

    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

__all__ = ["HeldWithoutGate", "ResilientChatModel", "SpanguardCallbackHandler", "run_span"]

logger = logging.getLogger("spanguard.plugins.langchain")

try:  # LangGraph's control-flow exceptions are not failures.
    from langgraph.errors import GraphBubbleUp, GraphInterrupt

    _BUBBLE_UP: tuple[type[BaseException], ...] = (GraphBubbleUp,)
    _INTERRUPT: tuple[type[BaseException], ...] = (GraphInterrupt,)
except ImportError:  # plain LangChain without LangGraph
    _BUBBLE_UP = ()
    _INTERRUPT = ()

_INTERRUPTED = {sc.RUN_INTERRUPTED: True}
_REQUEST_CACHE_SIZE = 256  # distinct (model, parameters) combinations remembered


class _Step:
    """Per-run adapter state kept on ``RunEntry.data`` (only for runs that need it)."""

    __slots__ = ("call", "first_token", "gate", "model", "router", "run", "started", "token",
                 "usage")

    def __init__(self) -> None:
        self.call: ModelCall | ToolCall | None = None
        self.first_token = False
        self.gate: GatedCall | None = None  # a hold gate around this tool call verifies it
        self.model: str | None = None
        self.router = False  # a ResilientChatModel's own run: its attempts carry the usage
        self.run: RunState | None = None  # roots only, when a policy is active
        self.started = 0.0
        self.token: object | None = None  # OTel context token of an active tool span
        self.usage: Usage | None = None  # summed from streamed chunks


def _serialized_name(serialized: Mapping[str, Any] | None, default: str) -> str:
    if serialized:
        name = serialized.get("name")
        if isinstance(name, str) and name:
            return name
        ident = serialized.get("id")
        if isinstance(ident, list) and ident:
            return str(ident[-1])
    return default


def _text_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else canonical_json(value)


class HeldWithoutGate(HoldPending):
    """A held tool call in a graph with no hold gate: the call did not run, the run stops.

    A callback can refuse a step but cannot pause a graph; ``HoldGate`` /
    ``HoldMiddleware`` (:mod:`spanguard.plugins.langgraph_holds`) pause it with
    ``interrupt()`` and resume it after approval.
    """

    def __init__(self, held: HoldPending) -> None:
        super().__init__(held.hold)
        self.args = (f"{self.args[0]}. The call did not run and this run stopped here: "
                     "the callback handler alone cannot pause a graph. Add "
                     "HoldGate(policy) as ToolNode(wrap_tool_call=...), or "
                     "HoldMiddleware(policy) to create_agent(middleware=[...]), to pause "
                     "with interrupt() and resume after approval; or, with a checkpointer, "
                     "re-run the stopped step after approval: graph.invoke(None, config).",)


class SpanguardCallbackHandler(BaseCallbackHandler):
    """Add to ``config={"callbacks": [handler]}`` of any LangGraph graph or runnable.

    ``policy``: a :class:`~spanguard.guardrails.Policy`, a path to a policy TOML
    file, or None (then ``SPANGUARD_POLICY``, else no enforcement at all).
    ``guards``: explicit guard objects (instead of those the policy builds).
    ``capture_content``: record prompts/completions/tool arguments; default from
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, else off.
    ``keep_plumbing``: keep prompt templates, sequence wrappers and routing runs.
    ``identity``: the maker the runs act for (guardrails' holds use it).
    ``agent_name``: root span name (default: the top-level run's name).
    ``hasher``/``prices``: default to those of :func:`spanguard.configure`.
    ``meter_provider``: for the guardrail decision counters.
    """

    run_inline = True
    raise_error = True

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        *,
        capture_content: bool | None = None,
        keep_plumbing: bool = False,
        identity: str | None = None,
        agent_name: str | None = None,
        hasher: KeyedHasher | None = None,
        prices: PriceTable | None = None,
        guards: Sequence[Guard] | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        max_open_runs: int = 10_000,
    ) -> None:
        super().__init__()
        provider = sg_config.resolve_tracer_provider(tracer_provider)
        self._tree = SpanTree(provider.get_tracer("spanguard.plugins.langchain", __version__),
                              max_open=max_open_runs)
        self._capture = capture_from_env() if capture_content is None else capture_content
        self._keep_plumbing = keep_plumbing
        self._identity = identity
        self._agent_name = agent_name
        self._hasher = hasher
        handle = sg_config.configured()
        self._prices = prices or (handle.prices if handle is not None else PriceTable.default())
        loaded = load_policy(policy)
        enforcer = (Enforcer(loaded, provider, meter_provider, guards=guards)
                    if loaded is not None or guards is not None else None)
        self._enforcer = enforcer if enforcer is not None and enforcer.active else None
        if self._enforcer is not None:
            install_refusal_filter()
        self.telemetry_errors = 0
        self._requests: dict[tuple[Any, ...], tuple[str | None, str, dict[str, Any]]] = {}

    # LangChain skips a handler's callbacks for event kinds it ignores. (Not
    # ``ignore_agent``: LangChain routes the tool callbacks through that flag.)
    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    # --- chains (roots, LangGraph nodes, plumbing) ------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            tree = self._tree
            key = run_id.int
            parent = tree.get(parent_run_id.int) if parent_run_id is not None else None
            name = kwargs.get("name") or _serialized_name(serialized, "chain")
            if parent is None:
                agent = self._agent_name or name
                self._open_root(key, agent_span_name(agent), agent_attributes(agent),
                                metadata)
                return
            fold = not self._keep_plumbing
            if fold and is_plumbing(name, tags, metadata):
                tree.alias(key, parent)
                return
            attrs: dict[str, Any] = dict(KIND_CHAIN)
            task = None
            if metadata:
                node = metadata.get("langgraph_node")
                if node is not None:
                    # A node's runnable may report itself again under the node's
                    # name (a named RunnableLambda): same task, so one span.
                    task = metadata.get("langgraph_checkpoint_ns")
                    if fold and task is not None and parent.data == task:
                        tree.alias(key, parent)
                        return
                    attrs[sc.OI_GRAPH_NODE_ID] = node
                    step = metadata.get("langgraph_step")
                    if isinstance(step, int):
                        attrs[sc.LANGGRAPH_STEP] = step
            tree.start_under(key, parent, name, attrs).data = task
        except Exception:
            self._failed("on_chain_start")

    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            entry = self._tree.end(run_id.int)
            if entry is not None and entry.parent is None and self._enforcer is not None:
                self._end_run(entry)
        except Exception:
            self._failed("on_chain_end")

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._close_after(run_id.int, error)

    # --- model calls ---------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        entry = self._open_model(run_id.int, _key(parent_run_id), metadata, kwargs, messages)
        if entry is not None and self._enforcer is not None:
            self._before_model(run_id.int, entry)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        entry = self._open_model(run_id.int, _key(parent_run_id), metadata, kwargs, [prompts])
        if entry is not None and self._enforcer is not None:
            self._before_model(run_id.int, entry)

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            key = run_id.int
            entry = self._tree.get(key)
            if entry is None or entry.key != key:
                return
            step: _Step = entry.data
            if not step.first_token:
                step.first_token = True
                entry.span.set_attributes({
                    sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: time.perf_counter() - step.started,
                    sc.GEN_AI_REQUEST_STREAM: True,
                })
            usage = getattr(getattr(chunk, "message", None), "usage_metadata", None)
            if usage:
                if step.usage is None:
                    step.usage = Usage()
                step.usage.add(usage)
        except Exception:
            self._failed("on_llm_new_token")

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        key = run_id.int
        entry: RunEntry | None = None
        usage: ModelUsage | None = None
        try:
            entry = self._tree.get(key)
            if entry is None or entry.key != key:
                return
            usage = self._record_response(entry, response)
        except Exception:
            self._failed("on_llm_end")
        if usage is not None and entry is not None:
            run = self._run_of(entry)
            step = entry.data
            if run is not None and self._enforcer is not None and isinstance(step.call,
                                                                             ModelCall):
                self._guarded(key, self._enforcer.after_model_call, run, step.call, usage,
                              entry.span)
        self._close(key)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        key = run_id.int
        entry: RunEntry | None = None
        error_type: str | None = None
        attrs: dict[str, Any] | None = None
        usage: ModelUsage | None = None
        try:
            entry = self._tree.get(key)
            if entry is not None and entry.key == key and not isinstance(error, _BUBBLE_UP):
                # One taxonomy for every model failure (quota_throttled, timeout, ...):
                # the retry wrapper's attempts and a plain model's call alike.
                error_type = classify(error).reason
                if entry.data.router:
                    attrs = error_routing_attributes(error)
                else:
                    usage = self._record_failed_usage(entry, error)
        except Exception:
            self._failed("on_llm_error")
        if usage is not None and entry is not None and self._enforcer is not None:
            # A failed attempt that reported tokens spent them: they count (retry tokens).
            run = self._run_of(entry)
            call = entry.data.call
            if run is not None and isinstance(call, ModelCall):
                self._guarded(key, self._enforcer.after_model_call, run, call, usage,
                              entry.span)
        if error_type is None:
            self._close_after(key, error)
        else:
            self._close(key, error=error, error_type=error_type, attributes=attrs)

    # --- tool calls ----------------------------------------------------------------
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        entry: RunEntry | None = None
        try:
            entry = self._open_tool(run_id.int, _key(parent_run_id), serialized, input_str, inputs,
                                    metadata, kwargs)
        except Exception:
            self._failed("on_tool_start")
        if entry is None:
            return
        step: _Step = entry.data
        if self._enforcer is not None:
            run = self._run_of(entry)
            if run is not None and isinstance(step.call, ToolCall):
                try:
                    self._guarded(run_id.int, self._enforcer.before_tool_call, run,
                                  step.call, entry.span)
                except HoldPending as held:
                    if isinstance(held, HeldWithoutGate):
                        raise
                    stopped = HeldWithoutGate(held)
                    note_refusal(self, stopped)
                    raise stopped from held
        try:
            step.token = activate(entry.context)
        except Exception:
            self._failed("on_tool_start")

    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        entry = self._leave_tool(run_id.int)
        if entry is None:
            return
        failed = False
        try:
            # A ToolMessage with status "error": the tool failed and LangChain
            # handed the error to the model instead of raising.
            failed = getattr(output, "status", None) == "error"
            if self._capture:
                text = value_text(output)
                entry.span.set_attributes({sc.GEN_AI_TOOL_CALL_RESULT: text,
                                           sc.OI_OUTPUT_VALUE: text})
        except Exception:
            self._failed("on_tool_end")
        gate = entry.data.gate
        if gate is not None:
            # The hold gate verifies; the span is still open, so the status lands on it.
            gate.settle(entry.span, output, failed)
        if self._enforcer is not None:
            self._after_tool(run_id.int, entry, ToolOutcome(result=output, is_error=failed))
        if failed:
            self._close(run_id.int, error_type="tool_error")
        else:
            self._close(run_id.int)

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        entry = self._leave_tool(run_id.int)
        if entry is not None and self._enforcer is not None and not isinstance(
                error, _BUBBLE_UP):
            self._after_tool(run_id.int, entry, ToolOutcome(result=error, is_error=True))
        self._close_after(run_id.int, error)

    # --- retrievers ----------------------------------------------------------------
    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            source = kwargs.get("name") or _serialized_name(serialized, "retriever")
            attrs = retrieval_attributes(source)
            attrs[sc.RETRIEVAL_QUERY_HASH] = payload_hash(query)
            if self._capture:
                attrs[sc.GEN_AI_RETRIEVAL_QUERY_TEXT] = query
                attrs[sc.OI_INPUT_VALUE] = query
            self._open(run_id.int, _key(parent_run_id), retrieval_span_name(source), attrs,
                       metadata)
        except Exception:
            self._failed("on_retriever_start")

    def on_retriever_end(
        self,
        documents: Sequence[Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        attrs: dict[str, Any] | None = None
        try:
            attrs = {sc.RETRIEVAL_CANDIDATE_COUNT: len(documents)}
            ids = document_ids(documents)
            if ids:
                attrs[sc.RETRIEVAL_DOCUMENT_IDS] = ids
        except Exception:
            self._failed("on_retriever_end")
        self._close(run_id.int, attributes=attrs)

    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._close_after(run_id.int, error)

    # --- opening spans -------------------------------------------------------------
    def _open(self, run_id: int, parent_run_id: int | None, name: str,
              attrs: dict[str, Any], metadata: Mapping[str, Any] | None) -> RunEntry:
        """A child of the parent run's span, or a new root when there is no known parent."""
        parent = self._tree.get(parent_run_id) if parent_run_id is not None else None
        if parent is not None:
            return self._tree.start_under(run_id, parent, name, attrs)
        return self._open_root(run_id, name, attrs, metadata)

    def _open_root(self, run_id: int, name: str, attrs: dict[str, Any],
                   metadata: Mapping[str, Any] | None) -> RunEntry:
        run_attrs = self._run_attributes(metadata) if metadata else None
        entry = self._tree.start(run_id, None, name, attrs, run_attributes=run_attrs)
        if self._enforcer is not None:
            step = _Step()
            step.run = self._start_run(run_id, metadata or {}, entry)
            entry.data = step
        return entry

    def _open_model(self, run_id: int, parent_run_id: int | None,
                    metadata: dict[str, Any] | None, kwargs: dict[str, Any],
                    messages: Sequence[Sequence[Any]]) -> RunEntry | None:
        model: str | None = None
        try:
            params = kwargs.get("invocation_params")
            model, name, attrs = self._request_attributes(params, metadata)
            if metadata and META_ATTEMPT in metadata:
                attrs.update(attempt_attributes(metadata))
            if self._capture:
                attrs.update(input_message_attributes(messages))
        except Exception:
            # Still open the span (and so still enforce) with what is known.
            self._failed("on_chat_model_start")
            attrs = model_attributes(model)
            name = chat_span_name(model)
        try:
            entry = self._open(run_id, parent_run_id, name, attrs, metadata)
            step = entry.data
            if step is None:
                step = entry.data = _Step()
            step.model = model
            if metadata and META_ROUTER in metadata:
                # The retry wrapper's own run is recorded but never budgeted: each of
                # its attempts is a model run of its own, checked and charged.
                step.router = is_router_run(metadata)
            if self._enforcer is not None and not step.router:
                step.call = ModelCall(model=model, is_retry=attempt_is_retry(metadata))
            step.started = time.perf_counter()
            return entry
        except Exception:
            self._failed("on_chat_model_start")
            return None

    def _request_attributes(self, params: Mapping[str, Any] | None,
                            metadata: Mapping[str, Any] | None
                            ) -> tuple[str | None, str, dict[str, Any]]:
        """The request model, the span name and a fresh copy of the request attributes.

        A graph calls the same model with the same parameters over and over, so the
        result is cached by the raw values it is read from (bounded: cleared when full).
        """
        try:
            key = request_key(params, metadata)
            cached = self._requests.get(key)
        except TypeError:  # an unhashable value where a name or number belongs
            key, cached = None, None
        if cached is None:
            model = request_model(params, metadata)
            provider = metadata.get("ls_provider") if metadata else None
            cached = (model, chat_span_name(model), model_attributes(
                model, provider if isinstance(provider, str) else None,
                **request_parameters(params, metadata)))
            if key is not None:
                if len(self._requests) >= _REQUEST_CACHE_SIZE:
                    self._requests.clear()
                self._requests[key] = cached
        return cached[0], cached[1], dict(cached[2])

    def _open_tool(self, run_id: int, parent_run_id: int | None,
                   serialized: Mapping[str, Any] | None, input_str: str,
                   inputs: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None,
                   kwargs: Mapping[str, Any]) -> RunEntry:
        name = _serialized_name(serialized, "") or kwargs.get("name") or "tool"
        arguments: Any = inputs if inputs is not None else input_str
        call_id = kwargs.get("tool_call_id")
        call_id = call_id if isinstance(call_id, str) else None
        digest: str | None = None
        try:
            digest = payload_hash(arguments)
            attrs = tool_attributes(name, call_id, digest)
            if self._capture:
                text = value_text(arguments)
                attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = text
                attrs[sc.OI_INPUT_VALUE] = text
        except Exception:
            # Unhashable arguments (a cycle): still open the span, and still enforce.
            self._failed("on_tool_start")
            attrs = tool_attributes(name, call_id)
        entry = self._open(run_id, parent_run_id, tool_span_name(name), attrs, metadata)
        step = entry.data
        if step is None:
            step = entry.data = _Step()
        step.gate = gate_for(name, call_id)
        if self._enforcer is not None:
            step.call = ToolCall(tool=name, arguments=inputs if inputs is not None
                                 else {"input": input_str},
                                 call_id=call_id, arguments_hash=digest)
        return entry

    # --- closing spans -------------------------------------------------------------
    def _record_response(self, entry: RunEntry, response: LLMResult) -> ModelUsage | None:
        """Set the response attributes; the usage for the guards when a policy is active."""
        step: _Step = entry.data
        info = Response(response)
        attrs = info.attributes()
        if step.router:
            # Its usage is its last attempt's, already counted on that attempt's span.
            routing = routing_attributes(response)
            if routing:
                attrs.update(routing)
            if self._capture:
                attrs.update(output_message_attributes(response))
            entry.span.set_attributes(attrs)
            return None
        usage = info.usage or step.usage
        cost: float | None = None
        if usage is not None:
            attrs.update(usage_attributes(usage.input, usage.output, cache_read=usage.cache_read,
                                          cache_creation=usage.cache_creation,
                                          reasoning=usage.reasoning))
            cost = self._prices.cost(info.model or step.model, usage.input, usage.output,
                                     usage.cache_read)
            self._tree.add_usage(entry, usage.input, usage.output, cost)
        else:
            self._tree.add_usage(entry, 0, 0, None)
        attrs.update(cost_attributes(cost))
        if self._capture:
            attrs.update(output_message_attributes(response))
        entry.span.set_attributes(attrs)
        if self._enforcer is None:
            return None
        if usage is None:
            return ModelUsage(cost_usd=None)
        return ModelUsage(input_tokens=usage.input, output_tokens=usage.output, cost_usd=cost)

    def _record_failed_usage(self, entry: RunEntry, error: BaseException) -> ModelUsage | None:
        """Usage a failed call reported (few providers do), like a successful call's."""
        inputs, outputs = error_usage(error)
        if not (inputs or outputs):
            return None
        step: _Step = entry.data
        cost = self._prices.cost(step.model, inputs, outputs, 0)
        entry.span.set_attributes({**usage_attributes(inputs, outputs),
                                   **cost_attributes(cost)})
        self._tree.add_usage(entry, inputs, outputs, cost)
        if self._enforcer is None:
            return None
        return ModelUsage(input_tokens=inputs, output_tokens=outputs, cost_usd=cost)

    def _leave_tool(self, run_id: int) -> RunEntry | None:
        """Deactivate the tool span's context first, whatever else fails."""
        try:
            entry = self._tree.get(run_id)
            if entry is None or entry.key != run_id:
                return None
            step: _Step = entry.data
            if step.token is not None:
                token, step.token = step.token, None
                deactivate(token)
            return entry
        except Exception:
            self._failed("tool end")
            return None

    def _after_tool(self, run_id: int, entry: RunEntry, outcome: ToolOutcome) -> None:
        assert self._enforcer is not None
        run = self._run_of(entry)
        call = entry.data.call
        if run is not None and isinstance(call, ToolCall):
            decisions = self._guarded(run_id, self._enforcer.after_tool_call, run, call,
                                      outcome, entry.span)
            record_verification(entry.span, verification_of(call.tool, decisions))

    def _close(self, run_id: int, *, error: BaseException | None = None,
               error_type: str | None = None, attributes: Mapping[str, Any] | None = None
               ) -> None:
        try:
            entry = self._tree.end(run_id, error=error, error_type=error_type,
                                   attributes=attributes)
            if entry is not None and entry.parent is None and self._enforcer is not None:
                self._end_run(entry)
        except Exception:
            self._failed("span end")

    def _end_run(self, root: RunEntry) -> None:
        run = self._run_of(root)
        if run is not None and self._enforcer is not None:
            self._enforcer.end_run(run)

    def _close_after(self, run_id: int, error: BaseException) -> None:
        if isinstance(error, _BUBBLE_UP):
            # An interrupt (human in the loop) or a Command to the parent graph is
            # control flow, not a failure.
            self._close(run_id, attributes=_INTERRUPTED if isinstance(error, _INTERRUPT)
                        else None)
        elif isinstance(error, GuardrailViolation):
            self._close(run_id, error=error, error_type=error.error_type)
        else:
            self._close(run_id, error=error)

    # --- guardrails ----------------------------------------------------------------
    def _before_model(self, run_id: int, entry: RunEntry) -> None:
        run = self._run_of(entry)
        step = entry.data
        if run is not None and self._enforcer is not None and isinstance(step.call, ModelCall):
            self._guarded(run_id, self._enforcer.before_model_call, run, step.call, entry.span)

    def _guarded(self, run_id: int, hook: Any, *args: Any) -> Any:
        """Run one enforcer hook; a refusal (or a guard failure) ends the span and propagates.

        Enforcement fails closed: whatever the hook raises reaches the caller, so
        the refused model or tool is never invoked.
        """
        try:
            return hook(*args)
        except BaseException as exc:
            if isinstance(exc, GuardrailViolation):
                self._close(run_id, error=exc, error_type=exc.error_type)
                note_refusal(self, exc)
            else:
                self._close(run_id, error=exc)
            raise

    def _run_of(self, entry: RunEntry) -> RunState | None:
        data = entry.root.data
        return data.run if isinstance(data, _Step) else None

    def _start_run(self, run_id: int, metadata: Mapping[str, Any], entry: RunEntry
                   ) -> RunState:
        assert self._enforcer is not None
        conversation = _conversation_id(metadata)
        user = _text_id(metadata.get("user_id"))
        tenant = _text_id(metadata.get("tenant_id"))
        hasher = self._get_hasher() if conversation or user or tenant else None
        identity = self._identity or _text_id(metadata.get("identity"))
        return self._enforcer.start_run(
            UUID(int=run_id),
            identity=identity,
            session=hasher(conversation) if hasher and conversation else None,
            user=hasher(user) if hasher and user else None,
            tenant=hasher(tenant) if hasher and tenant else None,
            trace_id=format(entry.span.get_span_context().trace_id, "032x"),
        )

    # --- run-level attributes --------------------------------------------------------
    def _run_attributes(self, metadata: Mapping[str, Any]) -> dict[str, Any] | None:
        conversation = _conversation_id(metadata)
        user = _text_id(metadata.get("user_id"))
        tenant = _text_id(metadata.get("tenant_id"))
        model_version = _text_id(metadata.get(sc.MODEL_VERSION))
        prompt_version = _text_id(metadata.get(sc.PROMPT_VERSION))
        flags = _text_id(metadata.get(sc.FEATURE_FLAG_STATE))
        if not (conversation or user or tenant or model_version or prompt_version or flags):
            return None
        hasher = self._get_hasher() if user or tenant else None
        return run_identity_attributes(
            conversation_id=conversation, hasher=self._hasher,  # None: the configured one
            user_hash=hasher(user) if hasher and user else None,
            tenant_hash=hasher(tenant) if hasher and tenant else None,
            model_version=model_version,
            prompt_version=prompt_version,
            feature_flag_state=flags,
        )

    def _get_hasher(self) -> KeyedHasher:
        if self._hasher is None:
            self._hasher = sg_config.current().hasher
        return self._hasher

    def _failed(self, where: str) -> None:
        self.telemetry_errors += 1
        level = logging.WARNING if self.telemetry_errors == 1 else logging.DEBUG
        logger.log(level, "spanguard: telemetry error in %s; the run continues without it",
                   where, exc_info=True)


def run_span(callbacks: Any) -> Span | None:
    """The span of the run that ``callbacks`` (a run's child callback manager) belong to,
    when a :class:`SpanguardCallbackHandler` among them traces it; else None.

    Lets code running inside a step (a tool-call interceptor, say) record under the
    step's span, in the run's trace, without the handler making every step's span
    the current OpenTelemetry span (which would cost every run).
    """
    parent = getattr(callbacks, "parent_run_id", None)
    if parent is None:
        return None
    for handler in getattr(callbacks, "handlers", ()):
        if isinstance(handler, SpanguardCallbackHandler):
            entry = handler._tree.get(parent.int)
            if entry is not None:
                return entry.span
    return None


def _key(run_id: UUID | None) -> int | None:
    # Run ids are UUIDs; their int hashes in C, the UUID's __hash__ is Python code.
    return run_id.int if run_id is not None else None


def _conversation_id(metadata: Mapping[str, Any]) -> str | None:
    return (_text_id(metadata.get("conversation_id")) or _text_id(metadata.get("session_id"))
            or _text_id(metadata.get("thread_id")))
