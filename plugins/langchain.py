"""LangChain / LangGraph plugin: one span tree per agent run, plus the guardrail hooks.

::

    from spanguard.plugins.langchain import SpanguardCallbackHandler
    handler = SpanguardCallbackHandler()   # or (tracer_provider, policy=..., meter_provider=...)
    graph.invoke(inputs, config={"callbacks": [handler]})

The top-level run becomes ``invoke_agent {name}``; LangGraph nodes become CHAIN
spans named after the node; an agent graph run inside it (a ``create_agent``
graph used as a node or called from a tool) becomes ``invoke_agent {its name}``;
model, tool and retriever runs become ``chat``, ``execute_tool`` and
``retrieval`` spans. Plumbing runs (prompt templates, sequence wrappers, routing
functions, LangGraph's hidden ``__start__``/writers) are folded into their
parent so the tree shows what a person thinks happened.

The root says how the run ended (``spanguard.run.status``): ``paused`` when an
``interrupt()`` stopped it to wait for a person, ``cancelled`` when it was
stopped from outside (a ``break`` out of ``stream()``, ``astream_events`` closed
early, a ``wait_for`` timeout: ``GeneratorExit``/``CancelledError`` are not
errors). A run resumed on the same ``thread_id`` with ``Command(resume=...)``
continues the paused run's trace (:mod:`spanguard.resume`). The same handler
attached twice (``with_config(callbacks=[h])`` and ``config={"callbacks": [h]}``)
traces the run once.

One handler serves any number of concurrent runs, sync or async: it is
``run_inline``, so LangChain calls it in the caller's thread or task instead of
shipping each callback to a thread pool, and its bookkeeping is keyed by run id
(:class:`~spanguard.spantree.SpanTree`), never by ambient state. Telemetry
fails open: every callback body is guarded and a bug in it is logged, never
raised. Enforcement fails closed: the handler sets ``raise_error`` so that a
guard's refusal (and only the guardrail hooks, in
:mod:`spanguard.plugins._langchain_guard`) propagates and stops the step before
the model or tool is invoked.

While a tool body runs, its ``execute_tool`` span is the current OpenTelemetry
span and the root run's ids are the current :func:`spanguard.run_context`, so a
LlamaIndex query or MCP call inside the tool joins the trace and is tagged (and
budgeted) as the agent run is.

Why one module of ~650 lines: LangChain's callback interface is one class, whose
fourteen callbacks take about 300 lines here (130 of them signatures LangChain
fixes), and the span bookkeeping they share stays beside them. What a model span
records lives in ``_langchain_model``, enforcement in ``_langchain_guard``, payload
reading in ``_langchain_extract``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

from spanguard.extras import missing_extra

try:
    from langchain_core.callbacks import BaseCallbackHandler
except ModuleNotFoundError as exc:
    raise missing_extra(__name__, exc, "langgraph") from exc
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, Span, SpanKind

from spanguard import __version__
from spanguard import config as sg_config
from spanguard import semconv as sc
from spanguard.attributes import (
    KIND_CHAIN,
    agent_attributes,
    agent_span_name,
    as_completion,
    chat_span_name,
    completion_span_name,
    deprecated_run_attributes,
    model_attributes,
    retrieval_attributes,
    retrieval_span_name,
    tool_attributes,
    tool_span_name,
)
from spanguard.content_budget import content_budget
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.gating import gate_for
from spanguard.guardrails.transient import classify
from spanguard.hashing import KeyedHasher, payload_hash
from spanguard.plugins._langchain_content import (
    CallContent,
    capture_from_env,
    run_input,
    run_output,
    same_message,
    value_text,
)
from spanguard.plugins._langchain_context import activate, deactivate
from spanguard.plugins._langchain_extract import (
    document_ids,
    response_text,
    run_ids,
    serialized_name,
    version_attributes,
)
from spanguard.plugins._langchain_fold import is_plumbing
from spanguard.plugins._langchain_guard import HeldWithoutGate, build_guard
from spanguard.plugins._langchain_model import ModelSpans
from spanguard.plugins._langchain_prompt import request_text
from spanguard.plugins._langchain_step import Step
from spanguard.plugins._langgraph_resume import answer_attributes, continues
from spanguard.plugins.resilient import (
    META_ROUTER,
    ResilientChatModel,
    error_routing_attributes,
    is_router_run,
)
from spanguard.pricing import PriceTable
from spanguard.resume import pause_points
from spanguard.runcontext import RunContext, current_run_context
from spanguard.runcontext import attach as attach_run_context
from spanguard.runcontext import detach as detach_run_context
from spanguard.spantree import RunEntry, SpanTree
from spanguard.transcript import Transcript

if TYPE_CHECKING:
    import os

    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

    from spanguard.guardrails.enforcer import Guard
    from spanguard.guardrails.policy import Policy
    from spanguard.guardrails.steps import ModelUsage

__all__ = ["HeldWithoutGate", "ResilientChatModel", "RunTracing", "SpanguardCallbackHandler",
           "run_span", "run_tracing"]

logger = logging.getLogger("spanguard.plugins.langchain")
_NO_INPUT = object()  # a root opened by a model, tool or retriever run: no chain input

try:  # LangGraph's control-flow exceptions are not failures.
    from langgraph.errors import GraphBubbleUp, GraphInterrupt

    _BUBBLE_UP: tuple[type[BaseException], ...] = (GraphBubbleUp,)
    _INTERRUPT: tuple[type[BaseException], ...] = (GraphInterrupt,)
except ImportError:  # plain LangChain without LangGraph
    _BUBBLE_UP = ()
    _INTERRUPT = ()

# Stopped from outside: a consumer broke out of a stream (GeneratorExit), a task was
# cancelled (a timeout, a client gone), Ctrl-C. Not a failure of the step.
_CANCELLED: tuple[type[BaseException], ...] = (asyncio.CancelledError, GeneratorExit,
                                               KeyboardInterrupt)
_NOT_FAILED = _BUBBLE_UP + _CANCELLED
_INTERRUPTED = {sc.RUN_INTERRUPTED: True}
# LangChain's mark of an agent graph (``create_agent(name=...)``): the graph's own run
# carries its name; LangGraph's stream transformer finds sub-agents the same way.
_AGENT_NAME_KEY = "lc_agent_name"
_AGENT_INTEGRATION = ("ls_integration", "langchain_create_agent")
_DEFAULT_GRAPH_NAME = "LangGraph"
_KIND = sc.OPENINFERENCE_SPAN_KIND
_TOOL_CACHE_SIZE = 256  # distinct tool names whose span name and attributes are kept
_CHAIN = KIND_CHAIN[_KIND]
# The conventions' span kind for a call to a model or a retriever in another process.
_CLIENT = SpanKind.CLIENT


class SpanguardCallbackHandler(BaseCallbackHandler):
    """Add to ``config={"callbacks": [handler]}`` of any LangGraph graph or runnable.

    ``tracer_provider`` (the only positional parameter): where the spans go;
    default: :func:`spanguard.configure`'s, else the global SDK provider.
    ``policy``: a :class:`~spanguard.guardrails.policy.Policy`, a path to a policy
    TOML file, or None (then ``SPANGUARD_POLICY``, else no enforcement at all).
    ``meter_provider``: for the guardrail decision counters.
    ``guards``: explicit guard objects (instead of those the policy builds).
    ``capture_content``: record prompts/completions/tool arguments; default from
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, else off.
    ``keep_plumbing``: keep prompt templates, sequence wrappers and routing runs.
    ``identity``: the maker the runs act for (guardrails' holds use it).
    ``agent_name``: root span name (default: the top-level run's name).
    ``hasher``/``prices``: default to those of :func:`spanguard.configure`.

    A run's user, tenant and session come from its metadata (``user_id``,
    ``tenant_id``, ``conversation_id``/``session_id``/``thread_id``, ``identity``),
    else from the :func:`spanguard.run_context` it was started in.
    """

    run_inline = True
    raise_error = True

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        policy: Policy | str | os.PathLike[str] | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: bool | None = None,
        keep_plumbing: bool = False,
        identity: str | None = None,
        agent_name: str | None = None,
        hasher: KeyedHasher | None = None,
        prices: PriceTable | None = None,
        guards: Sequence[Guard] | None = None,
        max_open_runs: int = 10_000,
    ) -> None:
        super().__init__()
        provider = sg_config.resolve_tracer_provider(tracer_provider)
        # Public so that a hold gate used with this handler can follow its providers.
        self.tracer_provider = provider
        self.meter_provider = meter_provider
        self._tree = SpanTree(provider.get_tracer("spanguard.plugins.langchain", __version__,
                                                  schema_url=sc.SEMCONV_SCHEMA_URL),
                              max_open=max_open_runs)
        self._capture = capture_from_env() if capture_content is None else capture_content
        self._keep_plumbing = keep_plumbing
        self._identity = identity
        self._agent_name = agent_name
        self._hasher = hasher
        handle = sg_config.configured()
        self._models = ModelSpans(self._tree, prices or (
            handle.prices if handle is not None else PriceTable.default()),
            content_budget() if self._capture else None)
        self._guard = build_guard(policy, guards, provider, meter_provider, self, self._close)
        self._tools: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self.telemetry_errors = 0

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
            if tree.get(key) is not None:
                return  # this handler twice in the run's callbacks: it is traced once
            parent = tree.get(parent_run_id.int) if parent_run_id is not None else None
            name = kwargs.get("name") or serialized_name(serialized, "chain")
            if parent is None:
                agent = self._agent_name or name
                root_attrs = agent_attributes(agent)
                if tags:
                    root_attrs[sc.OI_TAG_TAGS] = list(tags)
                if self._capture:
                    root_attrs[sc.OI_INPUT_VALUE] = run_input(inputs)
                self._open_root(key, agent_span_name(agent), root_attrs, metadata, inputs)
                return
            if metadata and _is_agent_graph(name, metadata):
                tree.start_under(key, parent, agent_span_name(name), agent_attributes(name))
                return
            node = metadata.get("langgraph_node") if metadata else None
            fold = not self._keep_plumbing
            if fold and is_plumbing(name, tags, node):
                tree.alias(key, parent)
                return
            task = None
            if node is None:
                attrs: dict[str, Any] = {_KIND: _CHAIN}
            else:
                # A node's runnable may report itself again under the node's name (a
                # named RunnableLambda): same task, so one span.
                task = metadata.get("langgraph_checkpoint_ns")  # type: ignore[union-attr]
                if fold and task is not None and parent.data == task:
                    tree.alias(key, parent)
                    return
                step = metadata.get("langgraph_step")  # type: ignore[union-attr]
                attrs = {_KIND: _CHAIN, sc.OI_GRAPH_NODE_ID: node}
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
            key = run_id.int
            attrs = None
            if self._capture:
                root = self._tree.get(key)
                if root is not None and root.key == key and root.parent is None:
                    attrs = {sc.OI_OUTPUT_VALUE: run_output(outputs)}
            entry = self._tree.end(key, attributes=attrs)
            if entry is not None and entry.parent is None:
                self._root_ended(entry)
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
        if self._tree.get(run_id.int) is not None:
            return  # this handler twice in the run's callbacks
        entry = self._open_model(run_id.int, _key(parent_run_id), metadata, kwargs, messages)
        if entry is not None and self._guard is not None:
            self._guard.before_model(run_id.int, entry)

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
        if self._tree.get(run_id.int) is not None:
            return  # this handler twice in the run's callbacks
        entry = self._open_model(run_id.int, _key(parent_run_id), metadata, kwargs, [prompts],
                                 completion=True)
        if entry is not None and self._guard is not None:
            self._guard.before_model(run_id.int, entry)

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
            step: Step = entry.data
            if chunk is not None:
                if chunk is step.last_chunk:
                    return  # this handler twice in the run's callbacks: the same chunk
                step.last_chunk = chunk
            self._models.chunk(entry, chunk)
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
        charge: ModelUsage | None = None
        try:
            entry = self._tree.get(key)
            if entry is None or entry.key != key:
                return
            charge = self._models.response(entry, response)
        except Exception:
            self._failed("on_llm_end")
        if entry is not None and self._guard is not None:
            if charge is not None:
                self._guard.after_model(key, entry, charge)
            else:  # a retry wrapper's run, or the response could not be read
                self._guard.cancel_model(entry)
            if self._guard.wants_answers:
                self._guard.check_answer(key, entry, response_text(response))
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
        charge: ModelUsage | None = None
        try:
            entry = self._tree.get(key)
            if entry is not None and entry.key == key and not isinstance(error, _NOT_FAILED):
                # One taxonomy for every model failure (quota_throttled, timeout, ...):
                # the retry wrapper's attempts and a plain model's call alike.
                error_type = classify(error).reason
                if entry.data.router:
                    attrs = error_routing_attributes(error)
                else:
                    charge = self._models.failed(entry, error)
        except Exception:
            self._failed("on_llm_error")
        if entry is not None and entry.key == key and self._guard is not None:
            if charge is not None:
                # A failed attempt that reported tokens spent them: they count (retry tokens).
                self._guard.after_model(key, entry, charge)
            else:  # failed, cancelled or interrupted without usage: nothing was spent
                self._guard.cancel_model(entry)
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
            if self._tree.get(run_id.int) is not None:
                return  # this handler twice in the run's callbacks
            entry = self._open_tool(run_id.int, _key(parent_run_id), serialized, input_str, inputs,
                                    metadata, kwargs)
        except Exception:
            self._failed("on_tool_start")
        if entry is None:
            return
        if self._guard is not None:
            self._guard.before_tool(run_id.int, entry)
        step: Step = entry.data
        try:
            step.token = activate(entry.context)
            root = entry.root.data
            if isinstance(root, Step) and root.ids is not None:
                step.ids_token = attach_run_context(root.ids)
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
        if self._guard is not None:
            self._guard.after_tool(run_id.int, entry, output, failed)
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
        if entry is not None and self._guard is not None and not isinstance(error, _NOT_FAILED):
            self._guard.after_tool(run_id.int, entry, error, True)
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
            if self._tree.get(run_id.int) is not None:
                return  # this handler twice in the run's callbacks
            source = kwargs.get("name") or serialized_name(serialized, "retriever")
            attrs = retrieval_attributes(source)
            attrs[sc.RETRIEVAL_QUERY_HASH] = payload_hash(query)
            if self._capture:
                attrs[sc.GEN_AI_RETRIEVAL_QUERY_TEXT] = query
                attrs[sc.OI_INPUT_VALUE] = query
            self._open(run_id.int, _key(parent_run_id), retrieval_span_name(source), attrs,
                       metadata, _CLIENT)
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
        if self._guard is not None:
            entry = self._tree.get(run_id.int)
            if entry is not None:
                # Before the attributes: the span lists what the model will see.
                self._guard.after_retrieval(run_id.int, entry, documents)
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
              attrs: dict[str, Any], metadata: Mapping[str, Any] | None,
              kind: SpanKind = SpanKind.INTERNAL) -> RunEntry:
        """A child of the parent run's span, or a new root when there is no known parent."""
        parent = self._tree.get(parent_run_id) if parent_run_id is not None else None
        if parent is not None:
            return self._tree.start_under(run_id, parent, name, attrs, kind=kind)
        return self._open_root(run_id, name, attrs, metadata, kind=kind)

    def _open_root(self, run_id: int, name: str, attrs: dict[str, Any],
                   metadata: Mapping[str, Any] | None, inputs: Any = _NO_INPUT,
                   kind: SpanKind = SpanKind.INTERNAL) -> RunEntry:
        ids = run_ids(metadata, self._identity, current_run_context())
        run_attrs = self._run_attributes(metadata, ids) if metadata or ids else None
        if run_attrs:
            attrs.update(deprecated_run_attributes(run_attrs))
        thread = metadata.get("thread_id") if metadata else None
        resumed = thread is not None and inputs is not _NO_INPUT and continues(inputs)
        if resumed:
            entry = self._open_resumed(run_id, name, attrs, run_attrs, str(thread), inputs)
        else:
            entry = self._tree.start(run_id, None, name, attrs, run_attributes=run_attrs,
                                     kind=kind)
        guard = self._guard
        if guard is not None or ids is not None or thread is not None or self._capture:
            step = Step()
            step.ids = ids
            if thread is not None:
                step.thread = str(thread)
                step.resumed = resumed
            if self._capture:
                step.transcript = Transcript(same_message)
            if guard is not None:
                step.run = guard.start_run(run_id, entry, ids, self._hash)
            entry.data = step
        return entry

    def _open_resumed(self, run_id: int, name: str, attrs: dict[str, Any],
                      run_attrs: dict[str, Any] | None, thread: str, inputs: Any) -> RunEntry:
        """The root of a run that continues its thread's paused run: under that run's
        root, linked to it, with the answer it carries (never its text)."""
        attrs[sc.RUN_RESUMED] = True
        attrs.update(answer_attributes(inputs, self._hash))
        point = pause_points().recall(self._hash(thread))
        if point is None:  # never paused here, or the record is gone: a trace of its own
            return self._tree.start(run_id, None, name, attrs, run_attributes=run_attrs)
        attrs[sc.RUN_PAUSED_SECONDS] = max(0.0, time.time() - point.paused_at)
        links = [point.link()]
        caller = trace.get_current_span().get_span_context()
        if caller.is_valid:  # the span current here is not the parent: link to it
            links.append(Link(caller, {sc.LINK_TYPE: sc.LINK_CALLED_FROM}))
        return self._tree.start(run_id, None, name, attrs, run_attributes=run_attrs,
                                context=point.context(), links=links)

    def _root_ended(self, root: RunEntry) -> None:
        """Enforcement's end of the run; where a paused run stopped, for its resumption."""
        if self._guard is not None:
            self._guard.end_run(root)
        step = root.data
        if not isinstance(step, Step) or step.thread is None:
            return
        if root.status == sc.RUN_STATUS_PAUSED:
            pause_points().remember(self._hash(step.thread), root.span.get_span_context())
        elif step.resumed:
            pause_points().forget(self._hash(step.thread))  # the story has ended

    def _open_model(self, run_id: int, parent_run_id: int | None,
                    metadata: dict[str, Any] | None, kwargs: dict[str, Any],
                    messages: Sequence[Sequence[Any]], completion: bool = False
                    ) -> RunEntry | None:
        """A model call's span; ``completion``: a text-completion model (``on_llm_start``),
        not a chat model."""
        model: str | None = None
        content: CallContent | None = None
        try:
            model, name, attrs, content = self._models.describe(
                kwargs.get("invocation_params"), metadata, messages,
                self._transcript(parent_run_id) if self._capture else None)
        except Exception:
            # Still open the span (and so still enforce) with what is known.
            self._failed("on_chat_model_start")
            attrs = model_attributes(model)
            name = chat_span_name(model)
        if completion:
            as_completion(attrs)
            name = completion_span_name(model)
        try:
            entry = self._open(run_id, parent_run_id, name, attrs, metadata, _CLIENT)
            step = entry.data
            if step is None:
                step = entry.data = Step()
            if content is not None:
                self._models.opened(entry, content)
            step.model = model
            if metadata and META_ROUTER in metadata:
                step.router = is_router_run(metadata)
            if self._guard is not None:
                self._guard.watch_model(step, metadata,
                                        request_text(messages, kwargs.get("invocation_params")),
                                        self._models.price(model))
            step.started = time.perf_counter()
            return entry
        except Exception:
            self._failed("on_chat_model_start")
            return None

    def _transcript(self, parent_run_id: int | None) -> Transcript | None:
        """The transcript of the run a model call belongs to (None for a root call)."""
        parent = self._tree.get(parent_run_id) if parent_run_id is not None else None
        root = parent.root.data if parent is not None else None
        return root.transcript if isinstance(root, Step) else None

    def _open_tool(self, run_id: int, parent_run_id: int | None,
                   serialized: Mapping[str, Any] | None, input_str: str,
                   inputs: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None,
                   kwargs: Mapping[str, Any]) -> RunEntry:
        name = serialized_name(serialized, "") or kwargs.get("name") or "tool"
        arguments: Any = inputs if inputs is not None else input_str
        call_id = kwargs.get("tool_call_id")
        call_id = call_id if isinstance(call_id, str) else None
        digest: str | None = None
        span_name, known = self._tool_kind(name)
        attrs = dict(known)
        if call_id:
            attrs[sc.GEN_AI_TOOL_CALL_ID] = call_id
            attrs[sc.OI_TOOL_CALL_ID] = call_id
        try:
            attrs[sc.TOOL_ARGS_HASH] = digest = payload_hash(arguments)
            if self._capture:
                text = value_text(arguments)
                attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = text
                attrs[sc.OI_INPUT_VALUE] = text
        except Exception:
            # Unhashable arguments (a cycle): still open the span, and still enforce.
            self._failed("on_tool_start")
        entry = self._open(run_id, parent_run_id, span_name, attrs, metadata)
        step = entry.data
        if step is None:
            step = entry.data = Step()
        step.gate = gate_for(name, call_id)
        if self._guard is not None:
            self._guard.watch_tool(step, name, inputs, input_str, call_id, digest)
        return entry

    def _tool_kind(self, name: str) -> tuple[str, Mapping[str, Any]]:
        """A tool's span name and name attributes, built once per tool name (bounded)."""
        known = self._tools.get(name)
        if known is None:
            if len(self._tools) >= _TOOL_CACHE_SIZE:
                self._tools.clear()
            known = self._tools[name] = (tool_span_name(name), tool_attributes(name))
        return known

    # --- closing spans -------------------------------------------------------------
    def _leave_tool(self, run_id: int) -> RunEntry | None:
        """Deactivate the tool span's context first, whatever else fails."""
        try:
            entry = self._tree.get(run_id)
            if entry is None or entry.key != run_id:
                return None
            step: Step = entry.data
            if step.ids_token is not None:
                ids_token, step.ids_token = step.ids_token, None
                detach_run_context(ids_token)
            if step.token is not None:
                token, step.token = step.token, None
                deactivate(token)
            return entry
        except Exception:
            self._failed("tool end")
            return None

    def _close(self, run_id: int, *, error: BaseException | None = None,
               error_type: str | None = None, attributes: Mapping[str, Any] | None = None,
               paused: bool = False, cancelled: bool = False) -> None:
        try:
            entry = self._tree.end(run_id, error=error, error_type=error_type,
                                   attributes=attributes, paused=paused, cancelled=cancelled)
            if entry is not None and entry.parent is None:
                self._root_ended(entry)
        except Exception:
            self._failed("span end")

    def _close_after(self, run_id: int, error: BaseException) -> None:
        if isinstance(error, _BUBBLE_UP):
            # An interrupt (human in the loop) or a Command to the parent graph is
            # control flow, not a failure; an interrupt pauses the run.
            if isinstance(error, _INTERRUPT):
                self._close(run_id, attributes=_INTERRUPTED, paused=True)
            else:
                self._close(run_id)
        elif isinstance(error, _CANCELLED):
            self._close(run_id, cancelled=True)
        elif isinstance(error, GuardrailViolation):
            self._close(run_id, error=error, error_type=error.error_type)
        else:
            self._close(run_id, error=error)

    # --- who the run is for -------------------------------------------------------
    def _run_attributes(self, metadata: Mapping[str, Any] | None,
                        ids: RunContext | None) -> dict[str, Any] | None:
        attrs = ids.attributes(self._get_hasher()) if ids is not None else {}
        if metadata:
            attrs.update(version_attributes(metadata))
        return attrs or None

    def _hash(self, value: str) -> str:
        return self._get_hasher()(value)

    def _get_hasher(self) -> KeyedHasher:
        if self._hasher is None:
            self._hasher = sg_config.current().hasher
        return self._hasher

    def _failed(self, where: str) -> None:
        self.telemetry_errors += 1
        level = logging.WARNING if self.telemetry_errors == 1 else logging.DEBUG
        logger.log(level, "spanguard: telemetry error in %s; the run continues without it",
                   where, exc_info=True)


class RunTracing(NamedTuple):
    """The span of a step a handler traces, and that handler."""

    span: Span
    handler: SpanguardCallbackHandler


def run_tracing(callbacks: Any) -> RunTracing | None:
    """The span of the run that ``callbacks`` (a run's child callback manager) belong to,
    and the :class:`SpanguardCallbackHandler` among them that traces it; else None.

    Lets code running inside a step (a tool-call interceptor, say) record under the
    step's span, in the run's trace and through the handler's providers, without the
    handler making every step's span the current OpenTelemetry span (which would
    cost every run).
    """
    parent = getattr(callbacks, "parent_run_id", None)
    if parent is None:
        return None
    for handler in getattr(callbacks, "handlers", ()):
        if isinstance(handler, SpanguardCallbackHandler):
            entry = handler._tree.get(parent.int)
            if entry is not None:
                return RunTracing(entry.span, handler)
    return None


def run_span(callbacks: Any) -> Span | None:
    """The span part of :func:`run_tracing`."""
    found = run_tracing(callbacks)
    return found.span if found is not None else None


def _is_agent_graph(name: str, metadata: Mapping[str, Any]) -> bool:
    """A chain run that is an agent graph's own run (``create_agent``, named or not)."""
    named = metadata.get(_AGENT_NAME_KEY)
    if named is not None:
        return bool(named == name)
    return name == _DEFAULT_GRAPH_NAME and metadata.get(_AGENT_INTEGRATION[0]) == \
        _AGENT_INTEGRATION[1]


def _key(run_id: UUID | None) -> int | None:
    # Run ids are UUIDs; their int hashes in C, the UUID's __hash__ is Python code.
    return run_id.int if run_id is not None else None
