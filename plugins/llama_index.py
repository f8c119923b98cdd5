"""LlamaIndex: query engines, retrievals, embeddings and LLM calls in the agent's span tree.

::

    from spanguard.plugins import llama_index as sg_llama
    sg_llama.instrument()     # or (tracer_provider, policy=..., meter_provider=..., identity=...)
    index.as_query_engine().query("...")
    sg_llama.uninstrument()

Instrumentation goes through LlamaIndex's own dispatcher (a span handler and an
event handler on the root dispatcher), not monkey-patching, so it sees every
component, including ones created before ``instrument()``. Spans start under
whatever OpenTelemetry span is current when a LlamaIndex operation begins: a
query engine called inside a LangGraph tool is part of the agent's trace. A run
is for the user, tenant and session of the :func:`spanguard.run_context` it starts
in (the LangChain handler sets it while a tool runs): its spans carry their
hashes and the policy's window budgets charge them.

Agents and workflows (``FunctionAgent``, ``ReActAgent``, ``AgentWorkflow``) are
``invoke_agent`` roots with one ``chat`` span per model call and one
``execute_tool`` span per tool call. Beside another LlamaIndex instrumentor
(OpenInference's), spanguard's trees stay separate whichever was instrumented
first (:mod:`spanguard.plugins._llama_index_context`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from spanguard.extras import missing_extra

try:
    from llama_index_instrumentation import get_dispatcher
except ModuleNotFoundError as exc:
    raise missing_extra(__name__, exc, "llama-index") from exc
from opentelemetry import metrics, trace

from spanguard import config as sg_config
from spanguard import semconv as sc
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.hashing import KeyedHasher
from spanguard.plugins._llama_index_guard import PolicyCallbackHandler
from spanguard.plugins._llama_index_handlers import (
    TRACER_NAME,
    Instrumentation,
    SpanguardEventHandler,
    SpanguardSpanHandler,
)
from spanguard.pricing import PriceTable
from spanguard.spantree import SpanTree

__all__ = ["CAPTURE_CONTENT_ENV", "instrument", "is_instrumented", "uninstrument"]

logger = logging.getLogger("spanguard.plugins.llama_index")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@dataclass
class _Installed:
    state: Instrumentation
    span_handler: SpanguardSpanHandler
    event_handler: SpanguardEventHandler
    policy_handler: PolicyCallbackHandler | None


_installed: _Installed | None = None
_lock = threading.Lock()


def instrument(
    tracer_provider: trace.TracerProvider | None = None,
    *,
    policy: Policy | str | os.PathLike[str] | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    identity: str | None = None,
    capture_content: bool | None = None,
    prices: PriceTable | None = None,
    hasher: KeyedHasher | None = None,
) -> None:
    """Start recording LlamaIndex operations as spans.

    ``tracer_provider`` (the only positional parameter): where the spans go.
    ``policy``: a :class:`~spanguard.guardrails.policy.Policy`, a path to a policy
    TOML file, or None (then ``SPANGUARD_POLICY``, else no enforcement); its model
    guards (budgets) run around every LLM call. ``meter_provider``: for the
    guardrail decision counters. ``identity``: the maker every run acts for
    (default: the run context's). ``capture_content=None`` reads
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``true`` turns it on);
    off, no query, prompt, completion or document text is recorded. ``prices``
    and ``hasher`` default to the configured handle's. A second call while
    instrumented changes nothing (call ``uninstrument()`` first to change options).
    """
    global _installed
    with _lock:
        if _installed is not None:
            logger.debug("spanguard: LlamaIndex is already instrumented; ignoring")
            return
        provider = sg_config.resolve_tracer_provider(tracer_provider)
        if prices is None or hasher is None:
            handle = sg_config.current()
            prices = handle.prices if prices is None else prices
            hasher = handle.hasher if hasher is None else hasher
        if capture_content is None:
            capture_content = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"
        loaded = load_policy(policy)
        enforcer = Enforcer(loaded, provider, meter_provider) if loaded is not None else None
        state = Instrumentation(SpanTree(provider.get_tracer(
            TRACER_NAME, schema_url=sc.SEMCONV_SCHEMA_URL)), hasher, prices,
                                capture_content, enforcer, identity)
        policy_handler = None
        if enforcer is not None and enforcer.active:
            policy_handler = PolicyCallbackHandler(state, enforcer)
            state.on_llm_enter = policy_handler.attach
            if enforcer.wants_retrievals:
                state.on_retriever_enter = policy_handler.attach
        installed = _Installed(state, SpanguardSpanHandler(state), SpanguardEventHandler(state),
                               policy_handler)
        dispatcher = get_dispatcher()
        # First in line: a peer instrumentor's span for the same operation is not yet
        # the current span when spanguard's starts (whatever the order of instrument()).
        dispatcher.span_handlers.insert(0, installed.span_handler)
        dispatcher.add_event_handler(installed.event_handler)
        _installed = installed


def uninstrument() -> None:
    """Remove every handler :func:`instrument` added; harmless when not instrumented.

    Spans still open (a stream never consumed keeps its LLM span and the spans
    above it open) are ended, marked ``spanguard.abandoned``.
    """
    global _installed
    with _lock:
        installed = _installed
        if installed is None:
            return
        dispatcher = get_dispatcher()
        dispatcher.span_handlers = [h for h in dispatcher.span_handlers
                                    if h is not installed.span_handler]
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers
                                     if h is not installed.event_handler]
        if installed.policy_handler is not None:
            installed.policy_handler.detach_all()
        # Streams never consumed (and the spans waiting on them) would stay open.
        installed.state.close()
        _installed = None


def is_instrumented() -> bool:
    return _installed is not None
