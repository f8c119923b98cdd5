"""The one object adapters talk to: it runs the policy's guards on each step.

Adapters describe a step (:mod:`spanguard.guardrails.steps`) and call the hook
for it; the enforcer asks each guard in order, records the decision on the
span tree (an event for an allow, a ``guardrail {name}`` child span for
anything else) and counts it, then returns or raises. Guards hold the policy
logic; the enforcer holds none, and neither imports a framework.

A model call is reserve -> call -> settle: ``before_model_call`` lets each guard
reserve what it predicts (a refusal gives back what the guards before it
reserved), ``after_model_call`` settles with the real usage (filled in per the
policy's ``on_missing_usage`` when the provider reported none), and
``cancel_model_call`` gives the reservations back when the admitted call failed
without usage or was cancelled. The hooks of one run hold its lock
(``RunState.lock``), so parallel branches of a run (threads or asyncio tasks) are
admitted one at a time against the same limits; tool calls too.

With an empty policy the hooks are a loop over zero guards: adapters can call
them unconditionally at no measurable cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from spanguard import semconv as sc
from spanguard.attributes import guardrail_attributes, guardrail_span_name
from spanguard.config import resolve_meter_provider
from spanguard.guardrails.audit import EnforcerAuditSink
from spanguard.guardrails.errors import DocumentsWithheld, GuardrailViolation, ResultWithheld
from spanguard.guardrails.guard import Guard, overrides
from spanguard.guardrails.pipeline import build_guards
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.steps import (
    Answer,
    Decision,
    ModelCall,
    ModelUsage,
    Retrieval,
    RunState,
    ToolCall,
    ToolOutcome,
)
from spanguard.guardrails.stores import Store
from spanguard.guardrails.structured import StructuredResult
from spanguard.guardrails.usage import GUARD_NAME as USAGE_GUARD
from spanguard.guardrails.usage import MissingUsage, UsageMissing

logger = logging.getLogger("spanguard.guardrails")

# Receives every decision that is not an allow, with the run and the step's subject
# (tool or model name), to append it to the audit log.
AuditSink = Callable[[Decision, RunState, "str | None"], None]

# Approval latency buckets (seconds): the seed's complacency signal sits under a second.
REVIEW_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class Enforcer:
    """Runs a policy's guards for many concurrent runs; holds no per-run state itself."""

    def __init__(self, policy: Policy | None,
                 tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None, *,
                 guards: Sequence[Guard] | None = None,
                 audit_sink: AuditSink | None = None,
                 store: Store | None = None) -> None:
        """``guards`` replaces the policy's guards (built by :func:`build_guards`);
        ``store`` replaces the policy's ``[store]`` for every guard and the audit log."""
        self.policy = policy or Policy()
        if audit_sink is None:
            url = self.policy.store.url if self.policy.store is not None else None
            audit_sink = EnforcerAuditSink(store_url=url, store=store, keys=self.policy.audit)
        self._audit: AuditSink = audit_sink
        self.guards: tuple[Guard, ...] = (
            build_guards(self.policy, store) if guards is None else tuple(guards))
        # Only guards that charge tokens or cost care about usage nobody reported.
        self._missing = (MissingUsage(self.policy.usage)
                         if any(guard.uses_usage for guard in self.guards) else None)
        self._tracer: Tracer = trace.get_tracer(
            "spanguard.guardrails", tracer_provider=tracer_provider,
            schema_url=sc.SEMCONV_SCHEMA_URL)
        # The same meter provider as configure()'s span-derived metrics, so every
        # governance metric reaches one destination (docs/governance.md).
        meter = metrics.get_meter("spanguard.guardrails",
                                  meter_provider=resolve_meter_provider(meter_provider))
        self._decisions = meter.create_counter(
            sc.METRIC_GUARDRAIL_DECISIONS, unit="{decision}",
            description="Guardrail decisions by guard and kind")
        self._findings = meter.create_counter(
            sc.METRIC_GUARDRAIL_FINDINGS, unit="{finding}",
            description="Refusals and flags by guard and error.type (seed 004's taxonomy)")
        self._review = meter.create_histogram(
            sc.METRIC_REVIEW_DURATION, unit="s",
            description="Approval latency: a hold shown to a checker until the decision",
            explicit_bucket_boundaries_advisory=REVIEW_BUCKETS)
        # Adapters build retrieval and answer steps only when some guard reads them.
        self.wants_retrievals = any(overrides(g, "after_retrieval") for g in self.guards)
        self.wants_answers = any(overrides(g, "check_answer") for g in self.guards)

    @property
    def active(self) -> bool:
        return bool(self.guards)

    def start_run(self, run_key: Hashable, **identity: Any) -> RunState:
        return RunState(run_key=run_key, **identity)

    def before_model_call(self, run: RunState, call: ModelCall, span: Span | None) -> None:
        """Raises a :class:`GuardrailViolation` if the call must not reach the provider;
        otherwise the guards have reserved what they predict, until the call settles."""
        if not self.guards:
            return
        with run.lock:
            for index, guard in enumerate(self.guards):
                try:
                    self._apply(guard.before_model_call(run, call), span, run, call.model)
                except BaseException:
                    self._give_back(run, call, index + 1)
                    raise

    def after_model_call(self, run: RunState, call: ModelCall, usage: ModelUsage,
                         span: Span | None) -> ModelUsage:
        """Charge what the call used and settle its reservations; returns the usage
        charged (an estimate, marked on ``span``, when the provider reported none).

        Every guard settles even when one refuses; the first refusal is raised after.
        """
        missing: UsageMissing | None = None
        if not usage.reported and self._missing is not None:
            usage, missing = self._missing.resolve(call, usage)
            if usage.estimated and span is not None and span.is_recording():
                span.set_attributes({sc.USAGE_ESTIMATED: True,
                                     sc.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
                                     sc.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens})
        refusal: BaseException | None = None
        with run.lock:
            run.input_tokens.append(usage.input_tokens)
            run.retry_flags.append(call.is_retry)
            run.output_tokens += usage.output_tokens
            run.model_calls += 1
            if usage.cost_usd is not None:
                run.cost_usd += usage.cost_usd
            for guard in self.guards:
                try:
                    self._apply(guard.after_model_call(run, call, usage), span, run, call.model)
                except BaseException as exc:
                    refusal = refusal or exc
        if refusal is not None:
            raise refusal
        if missing is not None:
            self._apply(Decision("deny", USAGE_GUARD, str(missing), error=missing), span, run,
                        call.model)
        return usage

    def cancel_model_call(self, run: RunState, call: ModelCall) -> None:
        """The admitted call ended without usage (an error, a cancellation): give back
        what the guards reserved for it. Never raises: a reservation that cannot be
        given back expires on its own."""
        with run.lock:
            self._give_back(run, call, len(self.guards))

    def before_tool_call(self, run: RunState, call: ToolCall,
                         span: Span | None) -> dict[str, Any]:
        """Raises if the tool call must not run. ``run.tool_calls`` counts it while the
        guards look (a refused call is taken back out).

        Returns the governance attributes the admitting decisions set on ``span`` (an
        approval used: the hold, the checker), for a caller whose tool span opens later.
        """
        recorded: dict[str, Any] = {}
        with run.lock:
            run.tool_calls += 1
            try:
                for guard in self.guards:
                    governance = self._apply(guard.before_tool_call(run, call), span, run,
                                             call.tool)
                    if governance:
                        recorded.update(governance)
            except BaseException:
                run.tool_calls -= 1
                raise
        return recorded

    def after_tool_call(self, run: RunState, call: ToolCall, outcome: ToolOutcome,
                        span: Span | None) -> list[Decision]:
        decisions = []
        for guard in self.guards:
            decision = guard.after_tool_call(run, call, outcome)
            if decision is not None:
                self._record(decision, span)
                if decision.kind == "deny":
                    self._audit(decision, run, call.tool)
                decisions.append(decision)
        return decisions

    def after_retrieval(self, run: RunState, retrieval: Retrieval, span: Span | None) -> None:
        """Raises a :class:`GuardrailViolation` if documents must not reach the model
        (a :class:`~spanguard.guardrails.tenant_scope.TenantScopeViolation` names them)."""
        for guard in self.guards:
            self._apply(guard.after_retrieval(run, retrieval), span, run, retrieval.source)

    def admit_retrieval(self, run: RunState, retrieval: Retrieval,
                        span: Span | None) -> tuple[int, ...]:
        """The indices of the documents to drop before the model sees the retrieval.

        A guard that withholds documents (:class:`DocumentsWithheld`) does not fail
        the retrieval: the guards are asked again about what remains, so every
        guard after it (the citation inventory, say) sees exactly what the model
        will see. Any other refusal is raised.
        """
        blocked: set[int] = set()
        documents = list(enumerate(retrieval.documents))
        while True:
            try:
                self.after_retrieval(
                    run, Retrieval(retrieval.source, [d for _, d in documents]), span)
                return tuple(sorted(blocked))
            except DocumentsWithheld as withheld:
                dropped = {documents[i][0] for i in withheld.blocked if i < len(documents)}
                if not dropped:
                    raise
                blocked |= dropped
                documents = [(i, d) for i, d in documents if i not in dropped]

    def check_answer(self, run: RunState, answer: Answer, span: Span | None) -> None:
        """Raises a :class:`GuardrailViolation` if the answer must not be returned."""
        for guard in self.guards:
            self._apply(guard.check_answer(run, answer), span, run, None)

    def check_structured_output(self, run: RunState, result: StructuredResult,
                                span: Span | None) -> None:
        """Raises :class:`~spanguard.guardrails.structured.RepairRequested` (ask again) or
        :class:`~spanguard.guardrails.structured.StructuredOutputError` (give up)."""
        for guard in self.guards:
            self._apply(guard.check_structured_output(run, result), span, run, None)

    def end_run(self, run: RunState) -> None:
        for guard in self.guards:
            guard.end_run(run)

    def _give_back(self, run: RunState, call: ModelCall, count: int) -> None:
        for guard in self.guards[:count]:
            try:
                guard.cancel_model_call(run, call)
            except Exception:
                logger.exception("spanguard: guard %r could not give back a reservation; it "
                                 "expires on its own", guard.name)

    def _apply(self, decision: Decision | None, span: Span | None, run: RunState,
               subject: str | None) -> dict[str, Any] | None:
        if decision is None:
            return None
        governance = self._record(decision, span)
        if not decision.allowed:
            self._audit(decision, run, subject)
            raise decision.error or GuardrailViolation(decision.reason)
        return governance

    def _record(self, decision: Decision, span: Span | None) -> dict[str, Any] | None:
        """Count the decision and put it on the trace; returns the governance attributes
        it copied onto ``span`` itself (a hold's fate, a verification), if any: every
        backend shows a span's attributes, few show its events or a child span's."""
        self._decisions.add(1, {sc.GUARDRAIL_NAME: decision.guard,
                                sc.GUARDRAIL_DECISION: decision.kind})
        attrs = guardrail_attributes(decision.guard, decision.kind, decision.reason or None)
        attrs.update(decision.attributes)
        review = attrs.get(sc.REVIEW_SECONDS)
        if isinstance(review, (int, float)):
            outcome = str(attrs.get(sc.REVIEW_DECISION, "unknown"))
            self._review.record(float(review), {sc.GUARDRAIL_NAME: decision.guard,
                                                sc.REVIEW_DECISION: outcome})
        # A refusal or a flag (a report with an error) is a finding; a hold is not (yet).
        error_type = None if decision.kind == "hold" else getattr(decision.error, "error_type",
                                                                   None)
        if error_type is None and decision.kind == "deny":
            error_type = "guardrail_violation"
        if error_type is not None:
            self._findings.add(1, {sc.GUARDRAIL_NAME: decision.guard, sc.ERROR_TYPE: error_type})
            attrs[sc.ERROR_TYPE] = error_type
        governance = {key: attrs[key] for key in _GOVERNANCE_KEYS if key in attrs} \
            if decision.attributes else None
        if span is not None and span.is_recording():
            if governance:
                span.set_attributes(governance)
            if decision.allowed:
                span.add_event(guardrail_span_name(decision.guard), attrs)
        if decision.allowed:
            return governance
        context = trace.set_span_in_context(span) if span is not None else None
        child = self._tracer.start_span(guardrail_span_name(decision.guard), context,
                                        attributes=attrs)
        if decision.kind == "deny":
            child.set_status(Status(StatusCode.ERROR, decision.reason))
        child.end()
        return governance


# The attributes of a decision that describe the governed step itself, copied onto its
# span (the tool span) beside the event or guardrail span that records the decision.
_GOVERNANCE_KEYS = (sc.HOLD_ID, sc.HOLD_STATUS, sc.HOLD_DECISION, sc.HOLD_CHECKER,
                    sc.REVIEW_SECONDS, sc.REVIEW_DECISION, sc.VERIFICATION_STATUS,
                    sc.VERIFICATION_REASON, sc.DEPRECATED_NAMES[sc.VERIFICATION_STATUS])


def withheld_result(decisions: Sequence[Decision]) -> ResultWithheld | None:
    """The refusal that replaces a tool's result, if a post-call guard withheld it."""
    for decision in decisions:
        if decision.kind == "deny" and isinstance(decision.error, ResultWithheld):
            return decision.error
    return None


__all__ = ["AuditSink", "Enforcer", "Guard", "withheld_result"]
