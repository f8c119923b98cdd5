"""LlamaIndex dispatcher handlers that turn its spans and events into spanguard spans.

LlamaIndex opens a dispatcher span for nearly every decorated method (``query``
and ``_query``, ``retrieve`` and ``_retrieve``, text splitters, prompt programs),
so a faithful copy would bury the four steps a person cares about. The rules:

* A span is *kept* when its object is a workflow or agent (``FunctionAgent``,
  ``ReActAgent``, ``AgentWorkflow``, any ``Workflow``: AGENT, ``invoke_agent
  {name}``), a tool (TOOL, ``execute_tool {name}``), a query engine or
  synthesizer (CHAIN), retriever (RETRIEVER), embedding model (EMBEDDING) or LLM
  (LLM), except an LLM's private helpers (``_prepare_chat_with_tools`` builds a
  request; it calls no model): one LLM span per model call.
* A kept span nested directly in a span of the *same object* is the same step
  (``query`` -> ``_query``, ``predict`` -> ``complete``): it is folded into it.
* Anything else below a kept span (splitters, prompt programs, response
  builders' helpers, a workflow's steps) is plumbing: folded, its children
  attach to the parent. So a retrieval a ``QueryEngineTool`` makes is under that
  tool's span, and an agent's tool call under the agent.
* A span with no parent is what the user called, so it is always kept; if its
  object is none of the above it becomes a CHAIN named after its class.

How a run ended goes on its root (``spanguard.run.status``): a task cancelled
(``CancelledError``, a ``wait_for`` timeout), a workflow cancelled by its user
(the workflow's ``SpanCancelledEvent``) or a stream closed before its end
(``GeneratorExit``) ends the spans it cut short as ``cancelled``, not as errors.
Content capture never consumes a stream: a streaming query's output is recorded
when the consumer has read it, from the LLM's end event.

Folded spans are aliases in :class:`~spanguard.spantree.SpanTree`, so events
dispatched inside them (LLM start/end fire inside ``complete``) reach the kept
span. Roots start under the ambient OpenTelemetry context, which is how a query
run inside a LangGraph tool lands under that tool's ``execute_tool`` span; they
take who the run is for from the ambient :func:`spanguard.run_context` (which the
LangChain handler sets while a tool runs): the hashed user/tenant and the session
go on every span of the run and into the policy's ``RunState``.

Telemetry fails open: every handler body is guarded and logs at debug level.

Why one module of ~700 lines: the streaming bookkeeping (a span held open until
its stream ends, its ancestors waiting with it, a lazy stream adopted by its
synthesizer) is one state machine over :class:`Instrumentation`'s maps; split
across modules it would be harder to follow, not easier.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.query import QueryEndEvent, QueryStartEvent
from llama_index.core.instrumentation.events.retrieval import (
    RetrievalEndEvent,
    RetrievalStartEvent,
)
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.response_synthesizers.base import BaseSynthesizer
from llama_index.core.tools.types import BaseTool
from llama_index.core.workflow import Workflow
from opentelemetry.trace import SpanKind
from pydantic import PrivateAttr

from spanguard import semconv as sc
from spanguard.attributes import (
    KIND_CHAIN,
    Attributes,
    agent_attributes,
    agent_span_name,
    as_completion,
    chat_span_name,
    completion_span_name,
    cost_attributes,
    embedding_attributes,
    embeddings_span_name,
    model_attributes,
    retrieval_attributes,
    retrieval_span_name,
    tool_attributes,
    tool_span_name,
    usage_attributes,
)
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.steps import RunState
from spanguard.hashing import KeyedHasher, canonical_json, payload_hash
from spanguard.plugins._llama_index_context import root_context
from spanguard.plugins._llama_index_extract import (
    agent_input,
    agent_name,
    agent_output,
    input_messages,
    model_name,
    output_messages,
    prompt_messages,
    provider_name,
    query_text,
    response_model,
    retrieval_attributes_for,
    retrieved_nodes_attributes,
    tool_arguments,
    tool_call_id,
    tool_name,
    tool_result,
    usage_from_response,
)
from spanguard.pricing import PriceTable
from spanguard.runcontext import RunContext, current_run_context
from spanguard.spantree import RunEntry, SpanTree, mark_error

logger = logging.getLogger("spanguard.plugins.llama_index")

# Bound on the instance -> open stream map (entries the tree reaped are pruned), and on
# the tool call ids waiting for their tool's span.
_MAX_STREAMS = 1024

AGENT = "agent"
TOOL = "tool"
CHAIN = "chain"
RETRIEVER = "retriever"
EMBEDDING = "embedding"
LLM = "llm"

# Checked in order: a class that is both (rare) gets the first role.
_ROLES: tuple[tuple[type, str], ...] = (
    (BaseLLM, LLM),
    (BaseEmbedding, EMBEDDING),
    (BaseRetriever, RETRIEVER),
    (BaseTool, TOOL),
    (Workflow, AGENT),
    (BaseQueryEngine, CHAIN),
    (BaseSynthesizer, CHAIN),
)
# Stopped from outside (a timeout, a client gone, a consumer that stopped reading).
_CANCELLED: tuple[type[BaseException], ...] = (asyncio.CancelledError, GeneratorExit,
                                               KeyboardInterrupt)
# An agent's step that runs one tool call; its ``ToolCall`` event has the call's id.
_CALL_TOOL_STEP = ".call_tool"
# The conventions' span kind per role: models, embedders and retrievers are calls to
# something that usually runs elsewhere (CLIENT); the rest run in the process.
_SPAN_KINDS = {LLM: SpanKind.CLIENT, EMBEDDING: SpanKind.CLIENT, RETRIEVER: SpanKind.CLIENT}
_INTERNAL = SpanKind.INTERNAL
TRACER_NAME = "spanguard.plugins.llama_index"
_JSON = "application/json"


class Step:
    """Adapter state on a kept span (``RunEntry.data``)."""

    __slots__ = ("adopter", "awaits_output", "calls", "cancelled", "deferred", "depth",
                 "first_chunk", "held", "ids", "instance_id", "lazy", "model", "role", "run",
                 "stream_keys", "usage_done")

    def __init__(self, role: str, instance_id: int, model: str | None = None) -> None:
        self.role = role
        self.instance_id = instance_id
        self.model = model
        self.run: RunState | None = None  # roots only, when a policy is active
        self.ids: RunContext | None = None  # roots only: who the run is for (raw)
        # LLM wrappers nest (``acomplete`` -> ``complete``) inside one kept span and
        # each reports its own start/end: only the outermost policy call and the
        # first reported usage count, so nothing is enforced or billed twice.
        self.depth = 0
        self.usage_done = False
        # Streaming: the dispatcher span ids of LLM calls that started and have not
        # reported their end yet (a stream's end comes when it is consumed), the
        # folded ids kept alive for those late events, how many open streams (this
        # one's or a descendant's) hold this span open, and whether its exit came.
        self.calls: set[str] | None = None
        self.stream_keys: list[str] | None = None
        self.held = 0
        self.deferred = False
        self.first_chunk = False
        # A synthesizer that returned a lazy generator (the LLM is called only when
        # it is consumed), and on that LLM's span, the synthesizer it was adopted by.
        self.lazy = False
        self.adopter: RunEntry | None = None
        # A query that returned a stream (content capture): its output is the stream's
        # text, known when the consumer has read it. A step the workflow cancelled.
        self.awaits_output = False
        self.cancelled = False


class Instrumentation:
    """Everything the handlers share: the span tree, hashing, prices, policy."""

    def __init__(self, tree: SpanTree, hasher: KeyedHasher, prices: PriceTable,
                 capture_content: bool, enforcer: Enforcer | None,
                 identity: str | None = None) -> None:
        self.tree = tree
        self.hasher = hasher
        self.prices = prices
        self.capture = capture_content
        self.enforcer = enforcer
        # The maker given to instrument(): wins over the run context's.
        self._maker = RunContext(identity=identity) if identity else None
        # Called with each LLM about to run (the policy handler attaches itself).
        self.on_llm_enter: Callable[[Any], None] | None = None
        # Likewise with each retriever (retrieval guards: tenant scope, citations).
        self.on_retriever_enter: Callable[[Any], None] | None = None
        self._roles: dict[type, str | None] = {}
        # LLM instance id -> its newest stream still being consumed. CustomLLM's
        # ``astream_chat`` opens ``stream_chat`` only when its generator is iterated,
        # outside any LlamaIndex span: that call is folded into the stream it serves.
        self._streams: dict[int, RunEntry] = {}
        # Synthesizers whose lazy stream has not started its LLM call yet.
        self._lazy: dict[Hashable, RunEntry] = {}
        # An agent's ``call_tool`` step span -> the id of the call it runs.
        self._tool_calls: dict[str, str] = {}

    def role_of(self, instance: Any) -> str | None:
        cls = type(instance)
        try:
            return self._roles[cls]
        except KeyError:
            role = next((r for base, r in _ROLES if isinstance(instance, base)), None)
            self._roles[cls] = role
            return role

    def run_state(self, entry: RunEntry) -> RunState | None:
        """The policy's per-run state, kept on the root span's step."""
        if self.enforcer is None:
            return None
        root: Step = entry.root.data
        if root.run is None:
            ctx = entry.root.span.get_span_context()
            ids = root.ids.guard_ids(self.hasher) if root.ids is not None else {}
            root.run = self.enforcer.start_run(entry.root.key,
                                               trace_id=format(ctx.trace_id, "032x"), **ids)
        return root.run

    def _run_ids(self) -> RunContext | None:
        """Who a new root run is for: the ambient run context, under instrument()'s maker."""
        ambient = current_run_context()
        maker = self._maker
        return ambient if maker is None else maker.over(ambient)

    # --- spans ----------------------------------------------------------------
    def enter(self, id_: str, instance: Any, parent_id: str | None,
              bound_args: Any = None) -> None:
        tree = self.tree
        parent = tree.get(parent_id) if parent_id is not None else None
        role = self.role_of(instance) if instance is not None else None
        if role == LLM and id_[id_.rfind(".", 0, -37) + 1] == "_":
            # An LLM's private helper (``_prepare_chat_with_tools``): no model call.
            if parent is not None:
                tree.fold(id_, parent_id)
            return
        if parent is not None:
            if role is None or parent.data.instance_id == id(instance):
                if role is None and id_.endswith(_CALL_TOOL_STEP, 0, -37):
                    self._note_tool_call(id_, bound_args)
                tree.fold(id_, parent_id)
                return
        elif role is None:
            role = CHAIN
        if role == LLM and self._streams and "stream" in id_[:-37]:
            serving = self._streams.get(id(instance))
            if serving is not None and tree.get(serving.key) is serving:
                tree.alias(id_, serving)
                return
        adopter = self._adopter() if role == LLM and parent is None else None
        name, attrs, model = self._describe(role, instance, id_)
        if role == TOOL:
            self._describe_call(attrs, bound_args, parent_id)
        ids: RunContext | None = None
        kind = _SPAN_KINDS.get(role, _INTERNAL)
        if adopter is not None:
            entry = tree.start_under(id_, adopter, name, attrs, kind=kind)
        elif parent is not None:
            entry = tree.start_under(id_, parent, name, attrs, kind=kind)
        else:
            if role == AGENT and self.capture:
                question = agent_input(bound_args)  # the trace's input (Langfuse's too)
                if question is not None:
                    attrs[sc.OI_INPUT_VALUE] = question
            ids = self._run_ids()
            entry = tree.start(id_, None, name, attrs, run_attributes=ids.attributes(
                self.hasher) if ids is not None else None, context=root_context(TRACER_NAME),
                kind=kind)
        entry.data = Step(role, id(instance), model)
        entry.data.adopter = adopter
        entry.data.ids = ids
        if role == LLM and self.on_llm_enter is not None:
            self.on_llm_enter(instance)
        elif role == RETRIEVER and self.on_retriever_enter is not None:
            self.on_retriever_enter(instance)

    def _describe(self, role: str, instance: Any,
                  id_: str) -> tuple[str, Attributes, str | None]:
        if role == AGENT:
            agent = agent_name(instance)
            return agent_span_name(agent), agent_attributes(agent), None
        if role == TOOL:
            tool = tool_name(instance)
            return tool_span_name(tool), tool_attributes(tool), None
        if role == LLM:
            model = model_name(instance)
            attrs = model_attributes(model, provider_name(instance),
                                     temperature=_float(getattr(instance, "temperature", None)))
            if _completes(instance, id_):
                return completion_span_name(model), as_completion(attrs), model
            return chat_span_name(model), attrs, model
        if role == EMBEDDING:
            model = model_name(instance)
            attrs = embedding_attributes(model, provider_name(instance))
            return embeddings_span_name(model), attrs, model
        if role == RETRIEVER:
            source = _retrieval_source(instance)
            return retrieval_span_name(source), retrieval_attributes(source), None
        name = type(instance).__name__ if instance is not None else id_[:-37]
        return name, dict(KIND_CHAIN), None

    def _note_tool_call(self, id_: str, bound_args: Any) -> None:
        call_id = tool_call_id(bound_args)
        if call_id is not None:
            if len(self._tool_calls) >= _MAX_STREAMS:
                self._tool_calls.clear()  # steps whose tool never ran: forget them
            self._tool_calls[id_] = call_id

    def _describe_call(self, attrs: Attributes, bound_args: Any, parent_id: str | None) -> None:
        """The call's id (from the agent step running it) and a hash of its arguments."""
        call_id = self._tool_calls.pop(parent_id, None) if parent_id is not None else None
        if call_id is not None:
            attrs[sc.GEN_AI_TOOL_CALL_ID] = call_id
            attrs[sc.OI_TOOL_CALL_ID] = call_id
        arguments = tool_arguments(bound_args)
        try:
            attrs[sc.TOOL_ARGS_HASH] = payload_hash(arguments)
            if self.capture:
                text = canonical_json(arguments)
                attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = text
                attrs[sc.OI_INPUT_VALUE] = text
        except (TypeError, ValueError):  # arguments that cannot be serialised
            logger.debug("spanguard: tool arguments not hashable", exc_info=True)

    def _adopter(self) -> RunEntry | None:
        """The synthesizer whose lazy stream this parentless LLM call serves.

        Only when exactly one is waiting: with several (concurrent streaming
        queries) the call cannot be told apart and stays a root of its own.
        """
        lazy = self._lazy
        if len(lazy) != 1:
            return None
        key, entry = lazy.popitem()
        return entry if self.tree.get(key) is entry else None

    def exit(self, id_: str, result: Any = None) -> None:
        tree = self.tree
        entry = tree.get(id_)
        if entry is None:
            return
        step: Step = entry.data
        if self._tool_calls:
            self._tool_calls.pop(id_, None)  # a step whose tool never started a span
        if step.role == TOOL and entry.key == id_:
            self._tool_ended(entry, result)
        elif step.role == AGENT and self.capture and entry.key == id_ and entry.is_root:
            answer = agent_output(result)
            if answer is not None:
                entry.span.set_attribute(sc.OI_OUTPUT_VALUE, answer)
        if (step.role == CHAIN and not step.lazy
                and (inspect.isgenerator(result) or inspect.isasyncgen(result))):
            # The LLM call happens when this generator is consumed, outside any span.
            step.lazy = True
            self._hold(entry)
            self._lazy[entry.key] = entry
        if entry.key != id_:
            # A folded LLM call that returned a stream: its end event comes later.
            if step.calls is not None and id_ in step.calls:
                if step.stream_keys is None:
                    step.stream_keys = []
                step.stream_keys.append(id_)
                return
        elif step.calls:
            self._hold(entry)  # a stream is open: end when its end event arrives
            step.deferred = True
            return
        elif step.held:
            step.deferred = True  # a descendant's stream is still being consumed
            return
        self._end(id_, cancelled=step.cancelled and entry.key == id_)

    def _tool_ended(self, entry: RunEntry, result: Any) -> None:
        text, failed = tool_result(result)
        if self.capture and text is not None:
            entry.span.set_attributes({sc.GEN_AI_TOOL_CALL_RESULT: text, sc.OI_OUTPUT_VALUE: text})
        if failed:  # the tool caught its error and reported it: a failed call all the same
            mark_error(entry.span, None, "tool_error")

    def _end(self, id_: Hashable, *, cancelled: bool = False) -> None:
        entry = self.tree.end(id_, cancelled=cancelled)
        if entry is not None and entry.is_root and self.enforcer is not None:
            run = entry.data.run
            if run is not None:
                self.enforcer.end_run(run)

    def drop(self, id_: Hashable, err: BaseException | None) -> None:
        if self._tool_calls and isinstance(id_, str):
            self._tool_calls.pop(id_, None)
        if isinstance(err, _CANCELLED):
            self._end(id_, cancelled=True)
            return
        error_type = getattr(err, "error_type", None)
        entry = self.tree.end(id_, error=err, error_type=error_type
                              if isinstance(error_type, str) else None)
        if entry is not None and entry.is_root and self.enforcer is not None:
            run = entry.data.run
            if run is not None:
                self.enforcer.end_run(run)

    def close(self) -> None:
        """End whatever is still open; the handlers are being removed."""
        self._streams.clear()
        self._lazy.clear()
        self.tree.abandon_all("instrumentation removed while this step was open")

    # --- streams --------------------------------------------------------------
    def _hold(self, entry: RunEntry) -> None:
        """Keep ``entry`` and every kept ancestor open until its stream ends."""
        if len(self._streams) > _MAX_STREAMS:
            self._streams = {k: e for k, e in self._streams.items()
                             if self.tree.get(e.key) is e}
        if len(self._lazy) > _MAX_STREAMS:
            self._lazy = {k: e for k, e in self._lazy.items() if self.tree.get(k) is e}
        if entry.data.role == LLM:
            self._streams[entry.data.instance_id] = entry
        node: RunEntry | None = entry
        while node is not None:
            node.data.held += 1
            node = node.parent

    def _release(self, entry: RunEntry, error: BaseException | None = None,
                 cancelled: bool = False) -> None:
        """The stream of ``entry`` is over: end it, then ancestors that only waited for it.

        ``cancelled``: the consumer closed the stream before its end; what waited
        for it was cut short too.
        """
        step: Step = entry.data
        tree = self.tree
        if self._streams.get(step.instance_id) is entry:
            del self._streams[step.instance_id]
        for key in step.stream_keys or ():
            tree.end(key)  # drops the alias kept for late events
        step.stream_keys = None
        step.calls = None
        node: RunEntry | None = entry
        while node is not None:
            held: Step = node.data
            held.held -= 1
            if held.held == 0 and held.deferred:
                if node is entry and error is not None:
                    self.drop(node.key, error)
                else:
                    self._end(node.key, cancelled=cancelled or held.cancelled)
            node = node.parent
        step.deferred = False
        adopter = step.adopter
        if adopter is not None:  # the synthesizer's lazy stream is over too
            step.adopter = None
            self._release(adopter, cancelled=cancelled)

    def on_llm_chunk(self, event: LLMChatInProgressEvent | LLMCompletionInProgressEvent) -> None:
        entry = self.step_for(event, LLM)
        if entry is None:
            return
        step: Step = entry.data
        if not step.first_chunk:
            step.first_chunk = True
            entry.span.set_attribute(sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                                     time.monotonic() - entry.started)

    def on_exception(self, event: ExceptionEvent) -> None:
        """A stream failed or was closed early (``GeneratorExit``): no end event will come."""
        entry = self.step_for(event, LLM)
        if entry is None:
            return
        step: Step = entry.data
        if not step.deferred or step.calls is None:
            return
        error = event.exception
        if isinstance(error, _CANCELLED):
            self._release(entry, cancelled=True)
        else:
            self._release(entry, error=error)

    def on_cancelled(self, event: BaseEvent) -> None:
        """A workflow cancelled a step or the whole run; the span exits without an error."""
        entry = self.tree.get(event.span_id) if event.span_id else None
        if entry is not None and entry.key == event.span_id and entry.data is not None:
            entry.data.cancelled = True

    # --- events ---------------------------------------------------------------
    def step_for_span(self, span_id: str | None, role: str) -> RunEntry | None:
        """The kept span that ``span_id`` (or the span it was folded into) stands for."""
        entry = self.tree.get(span_id) if span_id else None
        if entry is None or entry.data is None or entry.data.role != role:
            return None
        return entry

    def step_for(self, event: BaseEvent, role: str) -> RunEntry | None:
        return self.step_for_span(event.span_id, role)

    def on_retrieval_start(self, event: RetrievalStartEvent) -> None:
        entry = self.step_for(event, RETRIEVER)
        if entry is not None:
            entry.span.set_attributes(retrieval_attributes_for(
                event.str_or_query_bundle, self.hasher, self.capture))

    def on_retrieval_end(self, event: RetrievalEndEvent) -> None:
        entry = self.step_for(event, RETRIEVER)
        if entry is not None:
            entry.span.set_attributes(retrieved_nodes_attributes(event.nodes, self.capture))

    def on_embedding_end(self, event: EmbeddingEndEvent) -> None:
        entry = self.step_for(event, EMBEDDING)
        if entry is not None:
            entry.span.set_attribute(sc.EMBEDDING_INPUT_COUNT, len(event.chunks))

    def on_llm_start(self, event: LLMChatStartEvent | LLMCompletionStartEvent) -> None:
        entry = self.step_for(event, LLM)
        if entry is None:
            return
        step: Step = entry.data
        if step.calls is None:
            step.calls = set()
        step.calls.add(event.span_id or "")
        if not self.capture:
            return
        if isinstance(event, LLMChatStartEvent):
            text, attrs = input_messages(event.messages)
        else:
            text, attrs = prompt_messages(event.prompt)
        attrs[sc.OI_INPUT_VALUE] = text
        attrs[sc.OI_INPUT_MIME_TYPE] = _JSON
        entry.span.set_attributes(attrs)

    def on_llm_end(self, event: LLMChatEndEvent | LLMCompletionEndEvent) -> None:
        entry = self.step_for(event, LLM)
        if entry is None:
            return
        step: Step = entry.data
        calls = step.calls
        if calls is not None:
            calls.discard(event.span_id or "")
        if not step.usage_done:
            step.usage_done = True
            self._record_response(entry, step, event.response)
        if step.deferred and not calls:
            self._release(entry)

    def _record_response(self, entry: RunEntry, step: Step, response: Any) -> None:
        attrs: Attributes = {}
        served = response_model(response)
        if served:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = served
        usage = usage_from_response(response)
        cost: float | None = None
        if usage is not None:
            attrs.update(usage_attributes(usage.input_tokens, usage.output_tokens,
                                          cache_read=usage.cache_read,
                                          reasoning=usage.reasoning))
            cost = self.prices.cost(served or step.model, usage.input_tokens,
                                    usage.output_tokens, usage.cache_read)
            self.tree.add_usage(entry, usage.input_tokens, usage.output_tokens, cost)
        attrs.update(cost_attributes(cost))
        if self.capture and response is not None:
            text, content = output_messages(response)
            attrs.update(content)
            attrs[sc.OI_OUTPUT_VALUE] = text
            _answer_waiting_queries(entry, text)
        entry.span.set_attributes(attrs)

    def on_query_start(self, event: QueryStartEvent) -> None:
        if self.capture:
            entry = self.step_for(event, CHAIN)
            if entry is not None:
                entry.span.set_attribute(sc.OI_INPUT_VALUE, query_text(event.query))

    def on_query_end(self, event: QueryEndEvent) -> None:
        if self.capture:
            entry = self.step_for(event, CHAIN)
            if entry is None:
                return
            response = event.response
            if isinstance(response, (StreamingResponse, AsyncStreamingResponse)):
                # str() would read the user's stream: take the text from the LLM's end.
                entry.data.awaits_output = True
            else:
                entry.span.set_attribute(sc.OI_OUTPUT_VALUE, str(response))


def _answer_waiting_queries(entry: RunEntry, text: str) -> None:
    """A stream's text, once read, is the output of the streaming queries it answers."""
    node: RunEntry | None = entry
    while node is not None:
        step: Step | None = node.data
        if step is not None:
            if step.awaits_output:
                step.awaits_output = False
                node.span.set_attribute(sc.OI_OUTPUT_VALUE, text)
            if step.adopter is not None:
                _answer_waiting_queries(step.adopter, text)
        node = node.parent


_COMPLETION_METHODS = frozenset({"complete", "acomplete", "stream_complete",
                                 "astream_complete"})
_EITHER_METHODS = frozenset({"predict", "apredict", "stream", "astream"})


def _completes(llm: Any, id_: str) -> bool:
    """Whether the LLM method this span is for calls a completion API (prompt in, text
    out: the conventions' ``text_completion``), not a chat API. ``predict`` and
    ``stream`` (a query engine's synthesizer calls them) use chat when the model is a
    chat model, else completion."""
    method = id_[id_.rfind(".", 0, -37) + 1:-37]
    if method in _COMPLETION_METHODS:
        return True
    if method in _EITHER_METHODS:
        metadata = getattr(llm, "metadata", None)
        return getattr(metadata, "is_chat_model", False) is not True
    return False


def _retrieval_source(retriever: Any) -> str:
    """The index id when the user named it (``index.set_index_id("handbook")``).

    LlamaIndex defaults index ids to a random UUID, which would make every span
    name unique; then the retriever's class name is used instead.
    """
    index = getattr(retriever, "_index", None)
    index_id = getattr(index, "index_id", None)
    if isinstance(index_id, str) and index_id and not _is_uuid(index_id):
        return index_id
    return type(retriever).__name__


def _is_uuid(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


_EVENTS: dict[type, Callable[[Instrumentation, Any], None]] = {
    RetrievalStartEvent: Instrumentation.on_retrieval_start,
    RetrievalEndEvent: Instrumentation.on_retrieval_end,
    EmbeddingEndEvent: Instrumentation.on_embedding_end,
    LLMChatStartEvent: Instrumentation.on_llm_start,
    LLMCompletionStartEvent: Instrumentation.on_llm_start,
    LLMChatEndEvent: Instrumentation.on_llm_end,
    LLMCompletionEndEvent: Instrumentation.on_llm_end,
    LLMChatInProgressEvent: Instrumentation.on_llm_chunk,
    LLMCompletionInProgressEvent: Instrumentation.on_llm_chunk,
    ExceptionEvent: Instrumentation.on_exception,
    QueryStartEvent: Instrumentation.on_query_start,
    QueryEndEvent: Instrumentation.on_query_end,
}
try:  # llama-index-workflows: a workflow cancelled a step or the run (not an error)
    from workflows.runtime.types.step_function import SpanCancelledEvent

    _EVENTS[SpanCancelledEvent] = Instrumentation.on_cancelled
except ImportError:  # pragma: no cover - an older or newer workflows package
    logger.debug("spanguard: workflows' SpanCancelledEvent not found; cancelled workflow "
                 "runs end as ok")


class SpanguardSpanHandler(BaseSpanHandler[BaseSpan]):
    """Receives LlamaIndex span enter/exit/drop; the span tree is the only bookkeeping.

    ``span_enter``/``span_exit``/``span_drop`` are overridden rather than the
    ``new_span`` trio so that no per-span pydantic object is built on the hot path.
    """

    _state: Instrumentation = PrivateAttr()

    def __init__(self, state: Instrumentation) -> None:
        super().__init__()
        self._state = state

    @classmethod
    def class_name(cls) -> str:
        return "SpanguardSpanHandler"

    def span_enter(self, id_: str, bound_args: Any, instance: Any | None = None,
                   parent_id: str | None = None, tags: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
        try:
            self._state.enter(id_, instance, parent_id, bound_args)
        except Exception:
            logger.debug("spanguard: span_enter failed for %s", id_, exc_info=True)

    def span_exit(self, id_: str, bound_args: Any, instance: Any | None = None,
                  result: Any | None = None, **kwargs: Any) -> None:
        try:
            self._state.exit(id_, result)
        except Exception:
            logger.debug("spanguard: span_exit failed for %s", id_, exc_info=True)

    def span_drop(self, id_: str, bound_args: Any, instance: Any | None = None,
                  err: BaseException | None = None, **kwargs: Any) -> None:
        try:
            self._state.drop(id_, err)
        except Exception:
            logger.debug("spanguard: span_drop failed for %s", id_, exc_info=True)

    def new_span(self, id_: str, bound_args: Any, instance: Any | None = None,
                 parent_span_id: str | None = None, tags: dict[str, Any] | None = None,
                 **kwargs: Any) -> BaseSpan | None:
        return None  # unused: span_enter is overridden

    def prepare_to_exit_span(self, id_: str, bound_args: Any, instance: Any | None = None,
                             result: Any | None = None, **kwargs: Any) -> BaseSpan | None:
        return None  # unused: span_exit is overridden

    def prepare_to_drop_span(self, id_: str, bound_args: Any, instance: Any | None = None,
                             err: BaseException | None = None,
                             **kwargs: Any) -> BaseSpan | None:
        return None  # unused: span_drop is overridden


class SpanguardEventHandler(BaseEventHandler):
    """Receives LlamaIndex events and adds what they carry to the open span."""

    _state: Instrumentation = PrivateAttr()

    def __init__(self, state: Instrumentation) -> None:
        super().__init__()
        self._state = state

    @classmethod
    def class_name(cls) -> str:
        return "SpanguardEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        handler = _EVENTS.get(type(event))
        if handler is None:
            return
        try:
            handler(self._state, event)
        except Exception:
            logger.debug("spanguard: %s handling failed", type(event).__name__,
                         exc_info=True)
