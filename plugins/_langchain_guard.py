"""Policy enforcement at LangChain's callback points, where a refusal can stop the step.

The callback handler (:mod:`spanguard.plugins.langchain`) traces; this module is
the part of it that enforces, as ``_llama_index_guard`` is for LlamaIndex. The
handler sets ``raise_error``, so LangChain re-raises what its callbacks raise:
a refusal raised from ``on_chat_model_start``/``on_tool_start`` stops the step
before the provider or the tool is invoked (enforcement fails closed), and usage
reported at ``on_llm_end`` is charged before the next step is admitted.

The guards see framework-free steps (``ModelCall``/``ToolCall``) kept on the
run's :class:`~spanguard.plugins._langchain_step.Step`; the run's ``RunState``
lives on its root, shared by every branch of the run. A model call hands the
guards its request text (messages, system prompt, bound tools) as a thunk for
their estimates, and the same ``ModelCall`` object goes back at its end: its
reservations are settled with the reported usage (or the text of the reply when
there is none), or given back when the call fails without usage or is cancelled.
A refusal ends the step's span with the violation's ``error.type`` first, then
propagates; LangChain's warning about a handler that raised is dropped for
exactly that refusal (:mod:`._langchain_quiet`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from spanguard.guardrails.enforcer import Enforcer, Guard, withheld_result
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.holds import HoldPending
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.steps import (
    Answer,
    ModelCall,
    ModelUsage,
    Retrieval,
    RetrievedDocument,
    RunState,
    TextParts,
    ToolCall,
    ToolOutcome,
)
from spanguard.guardrails.tenant_scope import TenantScopeViolation
from spanguard.guardrails.verify import record_verification, verification_of
from spanguard.plugins._langchain_quiet import install as install_refusal_filter
from spanguard.plugins._langchain_quiet import note_refusal
from spanguard.plugins._langchain_step import Step
from spanguard.plugins.resilient import attempt_is_retry

if TYPE_CHECKING:
    import os

    from opentelemetry import metrics, trace

    from spanguard.runcontext import RunContext
    from spanguard.spantree import RunEntry

# The handler's span end: ``close(run_id, error=..., error_type=...)``; never raises.
Close = Callable[..., None]


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


def build_guard(policy: Policy | str | os.PathLike[str] | None, guards: Sequence[Guard] | None,
                tracer_provider: trace.TracerProvider,
                meter_provider: metrics.MeterProvider | None, handler: object,
                close: Close) -> RunGuard | None:
    """The handler's enforcement, or None when the policy has nothing to enforce.

    None keeps the handler's hot path free of enforcement: every hook is skipped
    with one ``is None`` test.
    """
    loaded = load_policy(policy)
    if loaded is None and guards is None:
        return None
    enforcer = Enforcer(loaded if loaded is not None else Policy(), tracer_provider,
                        meter_provider, guards=guards)
    if not enforcer.active:
        return None
    install_refusal_filter()
    return RunGuard(enforcer, handler, close)


class RunGuard:
    """The enforcer's hooks, called by one handler at its callback points."""

    __slots__ = ("_close", "_enforcer", "_handler")

    def __init__(self, enforcer: Enforcer, handler: object, close: Close) -> None:
        self._enforcer = enforcer
        self._handler = handler
        self._close = close

    # --- describing steps ---------------------------------------------------------
    def start_run(self, run_id: int, entry: RunEntry, ids: RunContext | None,
                  hash_id: Callable[[str], str]) -> RunState:
        """The guards' state of a new run, tagged with its (hashed) ids and trace."""
        identity = ids.guard_ids(hash_id) if ids is not None else {}
        return self._enforcer.start_run(
            UUID(int=run_id), trace_id=format(entry.span.get_span_context().trace_id, "032x"),
            **identity)

    @staticmethod
    def watch_model(step: Step, metadata: Mapping[str, Any] | None, prompt: TextParts,
                    price: Callable[[int, int], float | None]) -> None:
        """Describe a model run for the guards (a retry wrapper's own run is not budgeted:
        each of its attempts is a model run of its own, checked and charged)."""
        if not step.router:
            step.call = ModelCall(model=step.model, is_retry=attempt_is_retry(metadata),
                                  prompt=prompt, price=price)

    @staticmethod
    def watch_tool(step: Step, name: str, inputs: Mapping[str, Any] | None, input_str: str,
                   call_id: str | None, digest: str | None) -> None:
        step.call = ToolCall(tool=name, arguments=inputs if inputs is not None
                             else {"input": input_str}, call_id=call_id, arguments_hash=digest)

    # --- hooks ----------------------------------------------------------------------
    def before_model(self, run_id: int, entry: RunEntry) -> None:
        run = _run_of(entry)
        call = entry.data.call
        if run is not None and isinstance(call, ModelCall):
            self._guarded(run_id, self._enforcer.before_model_call, run, call, entry.span)

    def after_model(self, run_id: int, entry: RunEntry, usage: ModelUsage) -> None:
        """Charge what a model run reported (a failed attempt's tokens count too)."""
        run = _run_of(entry)
        call = entry.data.call
        if run is not None and isinstance(call, ModelCall):
            self._guarded(run_id, self._enforcer.after_model_call, run, call, usage, entry.span)

    def cancel_model(self, entry: RunEntry) -> None:
        """A model run ended without usage (an error, a cancellation, an interrupt): give
        back what the guards reserved for it. Never raises."""
        run = _run_of(entry)
        call = entry.data.call
        if run is not None and isinstance(call, ModelCall):
            self._enforcer.cancel_model_call(run, call)

    def before_tool(self, run_id: int, entry: RunEntry) -> None:
        """Admit a tool call or stop the run; a held call stops it (only a gate can pause)."""
        run = _run_of(entry)
        call = entry.data.call
        if run is None or not isinstance(call, ToolCall):
            return
        try:
            self._guarded(run_id, self._enforcer.before_tool_call, run, call, entry.span)
        except HoldPending as held:
            if isinstance(held, HeldWithoutGate):
                raise
            stopped = HeldWithoutGate(held)
            note_refusal(self._handler, stopped)
            raise stopped from held

    def after_tool(self, run_id: int, entry: RunEntry, result: Any, is_error: bool) -> None:
        """The after-call guards (verification); the status goes on the open tool span."""
        run = _run_of(entry)
        call = entry.data.call
        if run is not None and isinstance(call, ToolCall):
            decisions = self._guarded(run_id, self._enforcer.after_tool_call, run, call,
                                      ToolOutcome(result=result, is_error=is_error), entry.span)
            record_verification(entry.span, verification_of(call.tool, decisions))
            withheld = withheld_result(decisions)
            if withheld is not None:
                # The result must not reach the model: the tool run fails with the
                # refusal (a callback cannot replace what the tool returns).
                self._close(run_id, error=withheld, error_type=withheld.error_type)
                note_refusal(self._handler, withheld)
                raise withheld

    def after_retrieval(self, run_id: int, entry: RunEntry, documents: Any) -> None:
        """Drop the documents the guards withhold, in place, before the retriever returns
        them (LangChain hands its callbacks the very list it returns); a sequence that
        cannot be changed fails the retrieval instead (fail closed)."""
        run = _run_of(entry)
        if run is None or not self._enforcer.wants_retrievals:
            return
        found = Retrieval(getattr(entry.span, "name", None), [_document(d) for d in documents])
        blocked = self._guarded(run_id, self._enforcer.admit_retrieval, run, found,
                                entry.span)
        if not blocked:
            return
        if not isinstance(documents, list):
            refused = TenantScopeViolation(blocked, len(found.documents), run.tenant)
            self._close(run_id, error=refused, error_type=refused.error_type)
            raise refused
        for index in reversed(blocked):
            del documents[index]

    def check_answer(self, run_id: int, entry: RunEntry, text: str | None) -> None:
        """The answer guards (citations) on a model run's text; a refusal propagates."""
        run = _run_of(entry)
        if run is None or not text or not self._enforcer.wants_answers or entry.data.router:
            return
        self._guarded(run_id, self._enforcer.check_answer, run, Answer(text), entry.span)

    @property
    def wants_answers(self) -> bool:
        return self._enforcer.wants_answers

    def end_run(self, root: RunEntry) -> None:
        run = _run_of(root)
        if run is not None:
            self._enforcer.end_run(run)

    def _guarded(self, run_id: int, hook: Callable[..., Any], *args: Any) -> Any:
        """Run one enforcer hook; a refusal (or a guard failure) ends the span and propagates.

        Enforcement fails closed: whatever the hook raises reaches the caller, so
        the refused model or tool is never invoked.
        """
        try:
            return hook(*args)
        except BaseException as exc:
            if isinstance(exc, GuardrailViolation):
                self._close(run_id, error=exc, error_type=exc.error_type)
                note_refusal(self._handler, exc)
            else:
                self._close(run_id, error=exc)
            raise


def _document(document: Any) -> RetrievedDocument:
    """A LangChain ``Document`` as the guards see it: ids and metadata, no text."""
    metadata = getattr(document, "metadata", None)
    metadata = metadata if isinstance(metadata, Mapping) else {}
    doc_id = getattr(document, "id", None) or metadata.get("id")
    return RetrievedDocument(str(doc_id) if doc_id else None, None, metadata)


def _run_of(entry: RunEntry) -> RunState | None:
    data = entry.root.data
    return data.run if isinstance(data, Step) else None
