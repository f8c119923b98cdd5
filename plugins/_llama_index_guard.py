"""Policy enforcement around LlamaIndex LLM calls, in a place where a refusal can stop them.

The instrumentation dispatcher calls span and event handlers inside
``try: ... except BaseException: pass``: a ``GuardrailViolation`` raised there
is swallowed and the provider is called anyway. LlamaIndex's callback manager
does not swallow: ``CallbackManager.on_event_start(CBEventType.LLM)`` runs
inside ``llm_chat_callback``/``llm_completion_callback`` *before* the LLM's
``chat``/``complete`` body, and an exception from a handler propagates to the
caller. So the policy hooks live in a :class:`BaseCallbackHandler` that the
span handler adds to the ``callback_manager`` of each LLM it sees being called
(once per manager; :func:`~spanguard.plugins.llama_index.uninstrument` takes it
off again).

Wrapper methods nest (``acomplete`` calls ``complete`` on some LLMs, each with
its own callback), so only the outermost start and end of one LLM span are
given to the enforcer.

The same handler sees ``CBEventType.RETRIEVE`` on the retrievers it is attached
to (when a guard reads retrievals): its end payload's ``NODES`` is the very list
``retrieve()`` returns, so the documents the guards withhold (another tenant's)
are removed from it before any synthesizer or LLM sees them. A model's answer
text goes to the answer guards (citations) at the LLM call's end; a refusal
raised there propagates to the caller, so the answer is never returned.

A stream's end callback runs when the stream is consumed, in the consumer's
context, where the LLM's span is no longer the active one: the callback's
``event_id`` ties it back to the span its start saw, and to the ``ModelCall``
the guards reserved for (a bounded map, so a stream never consumed cannot pin
its entry; its reservation is given back when it is dropped). The start hands
the guards the request's messages for their estimates; the end settles with the
reported usage, or with the reply's text when there is none, and a call that
raised gives its reservation back.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation.span import active_span_id

from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.steps import Answer, ModelCall, ModelUsage, Retrieval, RetrievedDocument
from spanguard.guardrails.tenant_scope import TenantScopeViolation
from spanguard.hashing import canonical_json
from spanguard.plugins._llama_index_extract import usage_from_response
from spanguard.plugins._llama_index_handlers import LLM, RETRIEVER, Instrumentation
from spanguard.spantree import RunEntry

_MAX_OPEN_EVENTS = 4096
_GUARDED = (CBEventType.LLM, CBEventType.RETRIEVE)
_OTHERS: list[CBEventType] = [t for t in CBEventType if t not in _GUARDED]


class PolicyCallbackHandler(BaseCallbackHandler):
    """Runs ``before_model_call`` / ``after_model_call`` for the LLM span in progress."""

    def __init__(self, state: Instrumentation, enforcer: Enforcer) -> None:
        super().__init__(event_starts_to_ignore=_OTHERS, event_ends_to_ignore=_OTHERS)
        self._state = state
        self._enforcer = enforcer
        self._managers: weakref.WeakSet[CallbackManager] = weakref.WeakSet()
        self._lock = threading.Lock()
        # callback event id -> (LLM span, the call the guards reserved for, or None)
        self._open: dict[str, tuple[RunEntry, ModelCall | None]] = {}

    def attach(self, llm: Any) -> None:
        """Add this handler to ``llm``'s callback manager (idempotent)."""
        manager = getattr(llm, "callback_manager", None)
        if not isinstance(manager, CallbackManager) or manager in self._managers:
            return
        with self._lock:
            if manager not in self._managers:
                manager.add_handler(self)
                self._managers.add(manager)

    def detach_all(self) -> None:
        with self._lock:
            self._open.clear()
            for manager in list(self._managers):
                if self in manager.handlers:
                    manager.remove_handler(self)
            self._managers = weakref.WeakSet()

    def on_event_start(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                       event_id: str = "", parent_id: str = "", **kwargs: Any) -> str:
        if event_type is not CBEventType.LLM:
            return event_id
        entry = self._state.step_for_span(active_span_id.get(), LLM)
        if entry is None:
            return event_id
        open_events = self._open
        if len(open_events) >= _MAX_OPEN_EVENTS:
            self._drop_oldest()
        step = entry.data
        step.depth += 1
        call: ModelCall | None = None
        if step.depth == 1:
            run = self._state.run_state(entry)
            if run is not None:
                call = ModelCall(step.model, prompt=_request_text(payload),
                                 price=partial(self._state.prices.cost, step.model))
                try:
                    self._enforcer.before_model_call(run, call, entry.span)
                except BaseException:
                    step.depth -= 1  # the call's end callback will not come
                    raise
        open_events[event_id] = (entry, call)
        return event_id

    def on_event_end(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                     event_id: str = "", **kwargs: Any) -> None:
        if event_type is CBEventType.RETRIEVE:
            if payload is not None:
                self._retrieved(payload.get(EventPayload.NODES))
            return
        opened = self._open.pop(event_id, None)
        if opened is None:
            return
        entry, call = opened
        step = entry.data
        step.depth -= 1
        run = self._state.run_state(entry) if call is not None else None
        if run is None or call is None:
            return
        if payload is None or EventPayload.EXCEPTION in payload:
            self._enforcer.cancel_model_call(run, call)
            return
        # Chat calls report ``RESPONSE``, completion calls ``COMPLETION``.
        response = payload.get(EventPayload.RESPONSE, payload.get(EventPayload.COMPLETION))
        usage = usage_from_response(response)
        if usage is None:
            charged = ModelUsage.missing(partial(_reply_text, response))
        else:
            cost = self._state.prices.cost(step.model, usage.input_tokens,
                                           usage.output_tokens, usage.cache_read)
            charged = ModelUsage(usage.input_tokens, usage.output_tokens, cost)
        self._enforcer.after_model_call(
            run, call, charged, entry.span)
        if self._enforcer.wants_answers:
            text = _answer_text(response)
            if text:
                self._enforcer.check_answer(run, Answer(text), entry.span)

    def _retrieved(self, nodes: Any) -> None:
        """Drop the nodes the guards withhold from the list ``retrieve()`` returns."""
        entry = self._state.step_for_span(active_span_id.get(), RETRIEVER)
        run = self._state.run_state(entry) if entry is not None else None
        if entry is None or run is None or nodes is None:
            return
        found = Retrieval(getattr(entry.span, "name", None), [_document(n) for n in nodes])
        blocked = self._enforcer.admit_retrieval(run, found, entry.span)
        if not blocked:
            return
        if not isinstance(nodes, list):  # cannot be changed: fail the retrieval instead
            raise TenantScopeViolation(blocked, len(found.documents), run.tenant)
        for index in reversed(blocked):
            del nodes[index]

    def _drop_oldest(self) -> None:
        """Forget the oldest open call (a stream never consumed) and give back what was
        reserved for it; never raises."""
        # RuntimeError/StopIteration/KeyError: another thread changed the map meanwhile.
        with contextlib.suppress(RuntimeError, StopIteration, KeyError):
            entry, call = self._open.pop(next(iter(self._open)))
            run = self._state.run_state(entry) if call is not None else None
            if run is not None and call is not None:
                self._enforcer.cancel_model_call(run, call)

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None,
                  trace_map: dict[str, list[str]] | None = None) -> None:
        return None


def _document(scored: Any) -> RetrievedDocument:
    """A ``NodeWithScore`` as the guards see it: source and chunk ids, metadata."""
    node = getattr(scored, "node", scored)
    chunk = getattr(node, "node_id", None)
    metadata = getattr(node, "metadata", None)
    return RetrievedDocument(getattr(node, "ref_doc_id", None) or chunk, chunk,
                             metadata if isinstance(metadata, dict) else {})


def _answer_text(response: Any) -> str | None:
    """A chat response's message text, or a completion's text."""
    message = getattr(response, "message", None)
    content = getattr(message, "content", None) if message is not None else None
    if isinstance(content, str):
        return content
    text = getattr(response, "text", None)
    return text if isinstance(text, str) else None



def _request_text(payload: dict[str, Any] | None) -> Callable[[], list[str]]:
    """A thunk for the request's text: the messages (or the prompt) and any tools."""
    def text() -> list[str]:
        if not payload:
            return []
        messages = payload.get(EventPayload.MESSAGES)
        parts = ([str(getattr(m, "content", m) or "") for m in messages] if messages
                 else [str(payload.get(EventPayload.PROMPT) or "")])
        extra = payload.get(EventPayload.ADDITIONAL_KWARGS)
        tools = extra.get("tools") if isinstance(extra, dict) else None
        if tools:
            parts.append(canonical_json(tools))
        return parts

    return text



def _reply_text(response: Any) -> list[str]:
    return [_answer_text(response) or ""]
