"""Run-level figures from the local store, grouped by model, tenant hash or agent.

What seed 001 asks a team to watch, from spans already on disk: runs, error
rate by ``error.type``, p50/p95 latency, tokens, cost, cost per successful
outcome (outcomes recorded with :func:`spanguard.record_outcome`, action
accepted or converted), loop-budget refusals and holds still pending.

Definitions (the tests pin them):

- A *run* is a trace's earliest local root that is not an outcome span,
  together with the runs that resumed it in the same trace (roots marked
  ``spanguard.run.resumed``: a paused run and its resumption are one story).
  Its status is the latest of them's ``spanguard.run.status`` (for spans
  without it: ERROR status -> ``error``, else ``ok``). It failed when that is
  ``error`` (a tool error the agent recovered from is not a failed run), typed
  by that root's ``error.type``; ``paused`` runs wait for a person and count
  as ``pending``; ``cancelled`` runs (stopped from outside) count as
  ``cancelled``. Neither is an error.
- Latency is the time the runs of the story worked (the sum of their roots'
  durations, not the wait for a person), over finished runs only (``ok`` or
  ``error``): a pending or cancelled run has no end-to-end latency yet.
- Percentiles are nearest-rank (p95 of 20 runs is the 19th fastest).
- Tokens and cost come from the roots' run totals when the span tree rolled
  them up, else from the model-call spans. Runs with an unknown price are
  counted (``runs_cost_unknown``), not priced at zero.
- ``--by model``: a run belongs to every model it called; tokens and cost are
  that model's share, runs/latency/errors are of the runs that used it (so the
  rows can add up to more runs than there are).
- An outcome belongs to the run in its trace, else the run named by its
  ``spanguard.outcome.trace_id``, else the latest run of its conversation that
  started before it.
- A loop refusal is a guardrail span with decision ``deny`` whose guard name or
  ``error.type`` mentions "loop" (the loop-budget and tool-loop guards).
- A finding is a guardrail decision that carries an ``error.type``: a refusal
  (a ``guardrail`` span) or a flag (a guardrail event on the step's span), counted
  once per decision by its ``error.type`` (``tool_argument_error``,
  ``tenant_scope_violation``, ``invalid_citation``, ...) whether or not the run
  then failed; a hold waiting for approval is not a finding.
- A hold is pending when the latest span that mentions its id says
  ``spanguard.hold.status = pending`` (or a ``hold`` decision with no status);
  it counts for the run that created it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from spanguard import semconv as sc
from spanguard.outcomes import SUCCESS_ACTIONS
from spanguard.store import StoredSpan, run_status

GroupBy = Literal["model", "tenant", "agent"]
NONE_KEY = "(none)"
_LLM_KIND = sc.SpanKind.LLM.value
_FINISHED = frozenset({sc.RUN_STATUS_OK, sc.RUN_STATUS_ERROR})


@dataclass
class _ModelShare:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    cost_unknown: bool = False


@dataclass
class Run:
    trace_id: str
    root: StoredSpan
    status: str
    duration_ms: float | None
    error_type: str | None
    tenant: str
    agent: str
    conversation: str | None
    input_tokens: int
    output_tokens: int
    cost: float
    cost_unknown: bool
    models: dict[str, _ModelShare]
    loop_refusals: int
    outcomes: Counter[str] = field(default_factory=Counter)
    holds_pending: int = 0
    findings: Counter[str] = field(default_factory=Counter)


@dataclass
class GroupReport:
    key: str
    runs: int = 0
    errors: int = 0
    pending: int = 0
    cancelled: int = 0
    errors_by_type: Counter[str] = field(default_factory=Counter)
    durations_ms: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    runs_cost_unknown: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    loop_refusals: int = 0
    holds_pending: int = 0
    findings_by_type: Counter[str] = field(default_factory=Counter)

    @property
    def successful_outcomes(self) -> int:
        return sum(self.outcomes[action] for action in SUCCESS_ACTIONS)

    @property
    def error_rate(self) -> float:
        return self.errors / self.runs if self.runs else 0.0

    @property
    def cost_per_successful_outcome(self) -> float | None:
        return self.cost_usd / self.successful_outcomes if self.successful_outcomes else None

    def to_json(self, by: str) -> dict[str, Any]:
        return {
            "by": by,
            "key": self.key,
            "runs": self.runs,
            "errors": self.errors,
            "pending": self.pending,
            "cancelled": self.cancelled,
            "error_rate": self.error_rate,
            "error_rate_by_type": {kind: count / self.runs
                                   for kind, count in sorted(self.errors_by_type.items())},
            "p50_ms": percentile(self.durations_ms, 50),
            "p95_ms": percentile(self.durations_ms, 95),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "runs_cost_unknown": self.runs_cost_unknown,
            "outcomes": dict(sorted(self.outcomes.items())),
            "successful_outcomes": self.successful_outcomes,
            "cost_per_successful_outcome": self.cost_per_successful_outcome,
            "loop_refusals": self.loop_refusals,
            "holds_pending": self.holds_pending,
            "findings_by_type": dict(sorted(self.findings_by_type.items())),
        }


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def build_report(spans: Iterable[StoredSpan], by: GroupBy) -> list[GroupReport]:
    """Groups sorted by cost (highest first), then key."""
    runs, outcome_spans, hold_status = _runs(spans)
    _attach_outcomes(runs, outcome_spans)
    for hold_id, (_, status, trace_id) in hold_status.items():
        run = runs.get(trace_id)
        if status == "pending" and run is not None and hold_id:
            run.holds_pending += 1
    groups: dict[str, GroupReport] = {}
    for run in runs.values():
        for key, share in _keys(run, by):
            group = groups.get(key)
            if group is None:
                group = groups[key] = GroupReport(key)
            _add(group, run, share)
    return sorted(groups.values(), key=lambda g: (-g.cost_usd, g.key))


def _keys(run: Run, by: GroupBy) -> list[tuple[str, _ModelShare | None]]:
    if by == "tenant":
        return [(run.tenant, None)]
    if by == "agent":
        return [(run.agent, None)]
    if not run.models:
        return [(NONE_KEY, None)]
    return list(run.models.items())


def _add(group: GroupReport, run: Run, share: _ModelShare | None) -> None:
    group.runs += 1
    if run.error_type is not None:
        group.errors += 1
        group.errors_by_type[run.error_type] += 1
    elif run.status == sc.RUN_STATUS_PAUSED:
        group.pending += 1
    elif run.status == sc.RUN_STATUS_CANCELLED:
        group.cancelled += 1
    if run.duration_ms is not None and run.status in _FINISHED:
        group.durations_ms.append(run.duration_ms)
    if share is None:
        group.input_tokens += run.input_tokens
        group.output_tokens += run.output_tokens
        group.cost_usd += run.cost
        group.runs_cost_unknown += run.cost_unknown
    else:
        group.input_tokens += share.input_tokens
        group.output_tokens += share.output_tokens
        group.cost_usd += share.cost
        group.runs_cost_unknown += share.cost_unknown
    group.outcomes.update(run.outcomes)
    group.loop_refusals += run.loop_refusals
    group.holds_pending += run.holds_pending
    group.findings_by_type.update(run.findings)


def _runs(spans: Iterable[StoredSpan]
          ) -> tuple[dict[str, Run], list[StoredSpan], dict[str, tuple[int, str, str]]]:
    by_trace: dict[str, list[StoredSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    runs: dict[str, Run] = {}
    outcomes: list[StoredSpan] = []
    holds: dict[str, tuple[int, str, str]] = {}
    for trace_id, members in by_trace.items():
        ids = {s.span_id for s in members}
        roots = []
        resumed = []
        for span in members:
            if sc.OUTCOME_ACTION in span.attributes:
                outcomes.append(span)
            elif span.parent_span_id is None or span.parent_span_id not in ids:
                roots.append(span)
            elif span.attributes.get(sc.RUN_RESUMED) is True:
                resumed.append(span)
            _note_hold(span, holds)
        if roots:
            order = _start_order
            root = min(roots, key=order)
            segments = [root, *sorted((s for s in resumed if order(s) > order(root)),
                                      key=order)]
            runs[trace_id] = _run(trace_id, segments, members)
    return runs, outcomes, holds


def _start_order(span: StoredSpan) -> tuple[int, str]:
    return span.start_time, span.span_id


def _note_hold(span: StoredSpan, holds: dict[str, tuple[int, str, str]]) -> None:
    """Track each hold's latest status, from span attributes and guardrail events.

    An approved call that then runs is recorded as an allow decision, i.e. a span
    event, so events count too: without them an executed hold would look pending.
    """
    _note_hold_status(span.attributes, span.end_time or span.start_time, span.trace_id, holds)
    for event in span.events:
        attributes = event.get("attributes") or {}
        if sc.HOLD_ID in attributes:
            _note_hold_status(attributes, int(event.get("timestamp") or span.start_time),
                              span.trace_id, holds)


def _note_hold_status(attributes: dict[str, Any], when: int, trace_id: str,
                      holds: dict[str, tuple[int, str, str]]) -> None:
    hold_id = attributes.get(sc.HOLD_ID)
    if not hold_id:
        return
    status = attributes.get(sc.HOLD_STATUS)
    if status is None:
        status = "pending" if attributes.get(sc.GUARDRAIL_DECISION) == "hold" else None
    if status is None:
        return
    previous = holds.get(str(hold_id))
    if previous is None:
        holds[str(hold_id)] = (when, str(status), trace_id)
    elif when >= previous[0]:
        holds[str(hold_id)] = (when, str(status), previous[2])


def _run(trace_id: str, segments: list[StoredSpan], members: list[StoredSpan]) -> Run:
    root, last = segments[0], segments[-1]
    attrs = root.attributes
    status = run_status(last)
    error_type = None
    if status == sc.RUN_STATUS_ERROR:
        error_type = str(last.attributes.get(sc.ERROR_TYPE) or last.status_message or "error")
    durations = [s.duration_ms for s in segments]
    duration = None if None in durations else sum(d for d in durations if d is not None)
    models: dict[str, _ModelShare] = {}
    loop_refusals = 0
    findings: Counter[str] = Counter()
    for span in members:
        a = span.attributes
        _note_findings(span, findings)
        if sc.GEN_AI_USAGE_INPUT_TOKENS in a or a.get(sc.OPENINFERENCE_SPAN_KIND) == _LLM_KIND:
            model = str(a.get(sc.GEN_AI_RESPONSE_MODEL) or a.get(sc.GEN_AI_REQUEST_MODEL)
                        or NONE_KEY)
            share = models.setdefault(model, _ModelShare())
            share.input_tokens += int(a.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0))
            share.output_tokens += int(a.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0))
            cost = a.get(sc.COST_USD)
            if isinstance(cost, (int, float)):
                share.cost += float(cost)
            elif a.get(sc.COST_UNKNOWN) or sc.GEN_AI_USAGE_INPUT_TOKENS in a:
                share.cost_unknown = True
        if a.get(sc.GUARDRAIL_DECISION) == "deny" and (
                "loop" in str(a.get(sc.GUARDRAIL_NAME, "")).lower()
                or "loop" in str(a.get(sc.ERROR_TYPE, "")).lower()):
            loop_refusals += 1
    # A run of the story that called no model has no totals: it adds nothing.
    rolled = [s.attributes for s in segments if sc.RUN_TOTAL_INPUT_TOKENS in s.attributes]
    if rolled:
        input_tokens = sum(int(a[sc.RUN_TOTAL_INPUT_TOKENS]) for a in rolled)
        output_tokens = sum(int(a.get(sc.RUN_TOTAL_OUTPUT_TOKENS, 0)) for a in rolled)
    else:
        input_tokens = sum(s.input_tokens for s in models.values())
        output_tokens = sum(s.output_tokens for s in models.values())
    costs = [c for c in (a.get(sc.RUN_TOTAL_COST_USD) for a in rolled)
             if isinstance(c, (int, float))]
    if rolled and len(costs) == len(rolled):
        cost, cost_unknown = float(sum(costs)), False
    else:
        cost = sum(s.cost for s in models.values())
        cost_unknown = any(s.attributes.get(sc.RUN_COST_UNKNOWN) for s in segments) or any(
            s.cost_unknown for s in models.values())
    tenant = attrs.get(sc.TENANT_HASH)
    agent = attrs.get(sc.GEN_AI_AGENT_NAME) or attrs.get(sc.OI_AGENT_NAME) or root.name
    conversation = attrs.get(sc.GEN_AI_CONVERSATION_ID)
    return Run(trace_id=trace_id, root=root, status=status, duration_ms=duration,
               error_type=error_type,
               tenant=str(tenant) if tenant else NONE_KEY, agent=str(agent),
               conversation=str(conversation) if conversation else None,
               input_tokens=input_tokens, output_tokens=output_tokens, cost=cost,
               cost_unknown=cost_unknown, models=models, loop_refusals=loop_refusals,
               findings=findings)


def _note_findings(span: StoredSpan, findings: Counter[str]) -> None:
    """Count the guardrail decisions with an ``error.type`` on this span and its events."""
    attributes = span.attributes
    if sc.GUARDRAIL_DECISION in attributes and sc.ERROR_TYPE in attributes:
        findings[str(attributes[sc.ERROR_TYPE])] += 1
    for event in span.events:
        event_attributes = event.get("attributes") or {}
        if sc.GUARDRAIL_DECISION in event_attributes and sc.ERROR_TYPE in event_attributes:
            findings[str(event_attributes[sc.ERROR_TYPE])] += 1


def _attach_outcomes(runs: dict[str, Run], outcomes: list[StoredSpan]) -> None:
    by_conversation: dict[str, list[Run]] = defaultdict(list)
    for candidate in runs.values():
        if candidate.conversation:
            by_conversation[candidate.conversation].append(candidate)
    for span in outcomes:
        action = str(span.attributes[sc.OUTCOME_ACTION])
        run = runs.get(span.trace_id)
        target = span.attributes.get(sc.OUTCOME_TARGET_TRACE_ID)
        if run is None and target:
            run = runs.get(str(target))
        if run is None:
            conversation = span.attributes.get(sc.GEN_AI_CONVERSATION_ID)
            earlier = [r for r in by_conversation.get(str(conversation), [])
                       if r.root.start_time <= span.start_time]
            if earlier:
                run = max(earlier, key=lambda r: r.root.start_time)
        if run is not None:
            run.outcomes[action] += 1
