"""The operations pack: Prometheus alert rules and a Grafana dashboard for seed 004's SLOs.

Generated from the metric names in :mod:`spanguard.semconv` and the units the
code creates its instruments with, so the pack cannot drift from the code (a
test regenerates it and compares with the committed files, feeds real
measurements through OpenTelemetry's Prometheus exporter to check every series
the rules read exists, and runs ``promtool check rules`` and
``promtool test rules`` on it)::

    python -m spanguard.opspack ops/        # ops/prometheus/*.yml, ops/grafana/*.json

One entry per SLO of the seed's table (cost control, loop containment, action
integrity, privacy/redaction, fallback integrity, tenant safety, reviewer
attention): its SLI, a warning and a critical alert, and a dashboard row. The
thresholds are :class:`Thresholds` (calibrate them per workload, as the seed
says; the defaults are starting points, not universal numbers).

Prometheus names follow OpenTelemetry's Prometheus translation: dots become
underscores, a unit becomes a suffix (``s`` -> ``_seconds``, ``USD`` ->
``_USD``, ``{annotations}`` -> nothing) and counters end in ``_total``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spanguard import semconv as sc

__all__ = ["METRICS", "Alert", "Metric", "Slo", "Thresholds", "dashboard", "rules", "slos",
           "write"]

Kind = Literal["counter", "histogram", "gauge"]
RULES_FILE = Path("prometheus") / "spanguard-slo-rules.yml"
DASHBOARD_FILE = Path("grafana") / "spanguard-slo-dashboard.json"
_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}


@dataclass(frozen=True, slots=True)
class Metric:
    """One instrument as the code creates it."""

    name: str
    kind: Kind
    unit: str

    @property
    def prometheus(self) -> str:
        """The base series name (a histogram adds ``_bucket``/``_sum``/``_count``)."""
        base = label(self.name)
        unit = "" if self.unit.startswith("{") else _UNIT_SUFFIX.get(self.unit, self.unit)
        if unit and not base.endswith(f"_{unit}"):
            base = f"{base}_{unit}"
        return f"{base}_total" if self.kind == "counter" else base


def label(name: str) -> str:
    """An attribute or metric name as Prometheus spells it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


# The instruments the pack reads, with the units the code gives them.
METRICS: dict[str, Metric] = {
    "findings": Metric(sc.METRIC_GUARDRAIL_FINDINGS, "counter", "{finding}"),
    "decisions": Metric(sc.METRIC_GUARDRAIL_DECISIONS, "counter", "{decision}"),
    "review": Metric(sc.METRIC_REVIEW_DURATION, "histogram", "s"),
    "routing": Metric(sc.METRIC_ROUTING_DECISIONS, "counter", "{decision}"),
    "redaction": Metric(sc.METRIC_REDACTION_EVENTS, "counter", "{value}"),
    "cost": Metric(sc.METRIC_COST_USD, "counter", "USD"),
    "tool_calls": Metric(sc.METRIC_TOOL_CALL_COUNT, "counter", "{call}"),
}

ERROR_TYPE = label(sc.ERROR_TYPE)
GUARD = label(sc.GUARDRAIL_NAME)
DECISION = label(sc.GUARDRAIL_DECISION)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where warnings and pages start; calibrate per workload and risk tier."""

    cost_usd_per_hour_warning: float = 10.0
    argument_errors_warning: int = 3
    fallback_ratio_warning: float = 0.2
    tenant_blocks_critical: int = 5
    review_mean_seconds_warning: float = 5.0
    fast_approvals_critical: int = 3
    window: str = "15m"
    review_window: str = "1h"


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    severity: Literal["warning", "critical"]
    expr: str
    summary: str
    for_: str = "0m"


@dataclass(frozen=True, slots=True)
class Slo:
    """One row of the seed's SLO table, with its alerts and dashboard queries."""

    key: str
    title: str
    sli: str
    target: str
    runbook: str
    alerts: tuple[Alert, ...]
    panels: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _findings(types: str, window: str) -> str:
    return (f'sum(increase({METRICS["findings"].prometheus}{{{ERROR_TYPE}=~"{types}"}}'
            f"[{window}]))")


def slos(t: Thresholds | None = None) -> tuple[Slo, ...]:
    """The seed's SLO table as queries over spanguard's metrics."""
    t = t or Thresholds()
    w = t.window
    cost = METRICS["cost"].prometheus
    routing = METRICS["routing"].prometheus
    review = METRICS["review"].prometheus
    redaction = METRICS["redaction"].prometheus
    decisions = METRICS["decisions"].prometheus
    tenant = label(sc.TENANT_HASH)
    status = label(sc.METRIC_LABEL_ROUTE_STATUS)
    outcome = label(sc.REVIEW_DECISION)
    cost_rate = f"sum by ({tenant}) (rate({cost}[{w}])) * 3600"
    budget_denials = (f'sum(increase({decisions}{{{GUARD}=~"loop_budget|window_budget",'
                      f'{DECISION}="deny"}}[{w}]))')
    loops = _findings("tool_loop_detected|no_progress_error", w)
    fallback_ratio = (f'sum(rate({routing}{{{status}="degraded"}}[{w}])) / '
                      f"clamp_min(sum(rate({routing}[{w}])), 1e-9)")
    mean_review = (f'sum(rate({review}_sum{{{outcome}="approved"}}[{t.review_window}])) / '
                   f'sum(rate({review}_count{{{outcome}="approved"}}[{t.review_window}]))')

    def redaction_of(outcome: str) -> str:
        return f'sum(increase({redaction}{{{label(sc.REDACTION_OUTCOME)}="{outcome}"}}[{w}]))'

    return (
        Slo("cost_control", "Cost control", "Cost velocity and budget consumption",
            "Spend remains within tenant/workflow budget",
            "Trip the circuit breaker, throttle, or require approval",
            (Alert("SpanguardCostVelocityHigh", "warning",
                   f"{cost_rate} > {t.cost_usd_per_hour_warning:g}",
                   "A tenant spends faster than the forecast (USD/hour)", "10m"),
             Alert("SpanguardBudgetBreached", "critical", f"{budget_denials} > 0",
                   "A loop or window budget refused a call: budget breach")),
            (("USD/hour by tenant", cost_rate), ("budget refusals", budget_denials))),
        Slo("loop_containment", "Loop containment", "No-progress count and repeated state",
            "Loops halt within the workflow profile",
            "Halt the agent, preserve state, request clarification or escalate",
            (Alert("SpanguardRepeatedState", "warning", f"{loops} > 0",
                   "An agent repeated a tool call or made no progress"),
             Alert("SpanguardLoopWithRisingCost", "critical",
                   f"{loops} > 0 and on() {budget_denials} > 0",
                   "Repeated state while budgets are being refused")),
            (("loop findings", loops),)),
        Slo("action_integrity", "Action integrity",
            "Tool schema and post-action verification status",
            "High-impact actions require verified state",
            "Block the affected route; hold, reconcile or compensate",
            (Alert("SpanguardToolArgumentErrors", "warning",
                   f"{_findings('tool_argument_error', w)} > {t.argument_errors_warning}",
                   "Repeated tool-argument validation failures"),
             Alert("SpanguardUnverifiedAction", "critical",
                   f"{_findings('unverified_action', w)} > 0",
                   "A mutation's verification failed or is unknown")),
            (("tool_argument_error", _findings("tool_argument_error", w)),
             ("unverified_action", _findings("unverified_action", w)),
             ("structured output failures",
              _findings("syntax_decode_error|schema_validation_error", w)))),
        Slo("privacy_redaction", "Privacy / redaction", "Sensitive payload exposure events",
            "No raw secrets in general telemetry",
            "Quarantine the trace, revoke exposed secrets, investigate access",
            (Alert("SpanguardRedactionCaughtSensitive", "warning",
                   f"{redaction_of('redacted')} > 0",
                   "The redactor caught sensitive values before export"),
             Alert("SpanguardRedactionFailed", "critical",
                   f"{redaction_of('failed')} > 0",
                   "Redaction failed: content was replaced, the redactor needs attention")),
            (("redacted", redaction_of("redacted")),
             ("failed", redaction_of("failed")))),
        Slo("fallback_integrity", "Fallback integrity",
            "Route downgrade with disclosure and quality-floor preservation",
            "All degradations are policy-preserving and observable",
            "Disable the route, fail closed, or require a user/reviewer choice",
            (Alert("SpanguardFallbackSpike", "warning",
                   f"{fallback_ratio} > {t.fallback_ratio_warning:g}",
                   "Many answers come from fallback routes", "10m"),
             Alert("SpanguardRoutesFailedClosed", "critical",
                   f'sum(increase({routing}{{{status}=~"blocked|failed_closed"}}[{w}])) > 0',
                   "Calls ended with no route: blocked or failed closed")),
            (("fallback ratio", fallback_ratio),
             ("by status", f"sum by ({status}) (rate({routing}[{w}]))"))),
        Slo("tenant_safety", "Tenant safety", "Cross-tenant retrieval/tool mismatch events",
            "No accepted cross-tenant boundary violation",
            "Isolate the scope, revoke implicated credentials, create an incident",
            (Alert("SpanguardTenantBoundaryBlocked", "warning",
                   f"{_findings('tenant_scope_violation', w)} > 0",
                   "Another tenant's document or result was blocked"),
             Alert("SpanguardTenantBoundaryRepeated", "critical",
                   f"{_findings('tenant_scope_violation', w)} > {t.tenant_blocks_critical}",
                   "Repeated attempted boundary crossing")),
            (("tenant_scope_violation", _findings("tenant_scope_violation", w)),)),
        Slo("reviewer_attention", "Reviewer attention",
            "Approval latency (hold shown -> decision) and approvals under the floor",
            "Reviews take long enough to read the request",
            "Add cognitive forcing to the review UI, audit the reviewer's approvals",
            (Alert("SpanguardFastApprovals", "warning",
                   f"{mean_review} < {t.review_mean_seconds_warning:g}",
                   "Mean approval latency is under the review floor", "30m"),
             Alert("SpanguardRubberStamping", "critical",
                   f"{_findings('review_below_floor', t.review_window)} > "
                   f"{t.fast_approvals_critical}",
                   "Approvals under the review floor keep coming")),
            (("mean approval seconds", mean_review),
             ("p50 approval seconds", f"histogram_quantile(0.5, sum by (le) "
                                      f"(rate({review}_bucket[{t.review_window}])))"))),
    )


def rules(t: Thresholds | None = None) -> dict[str, Any]:
    """The Prometheus rule file (one group per SLO)."""
    groups = []
    for slo in slos(t):
        group_rules = [{
            "alert": alert.name, "expr": alert.expr, "for": alert.for_,
            "labels": {"severity": alert.severity, "slo": slo.key},
            "annotations": {"summary": alert.summary, "sli": slo.sli,
                            "slo_target": slo.target, "runbook": slo.runbook},
        } for alert in slo.alerts]
        groups.append({"name": f"spanguard-{slo.key}", "rules": group_rules})
    return {"groups": groups}


def dashboard(t: Thresholds | None = None) -> dict[str, Any]:
    """A Grafana dashboard: one row per SLO, a time series per SLI query and alert."""
    panels: list[dict[str, Any]] = []
    y = 0
    for slo in slos(t):
        panels.append({"type": "row", "title": slo.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": len(panels) + 1,
                       "panels": []})
        y += 1
        queries = [*slo.panels, *((f"{a.severity}: {a.name}", a.expr) for a in slo.alerts)]
        for index, (title, expr) in enumerate(queries):
            panels.append({
                "type": "timeseries", "title": title, "id": len(panels) + 1,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "description": f"{slo.sli}. Target: {slo.target}.",
                "gridPos": {"h": 8, "w": 8, "x": 8 * (index % 3), "y": y + 8 * (index // 3)},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": title}],
            })
        y += 8 * ((len(queries) + 2) // 3)
    return {
        "title": "spanguard SLOs (seed 004)", "uid": "spanguard-slo", "schemaVersion": 39,
        "tags": ["spanguard", "slo"], "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "panels": panels,
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block YAML for dicts, lists and scalars (scalars JSON-quoted: valid YAML)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {json.dumps(item)}")
    elif isinstance(value, list):
        for item in value:
            body = to_yaml(item, indent + 2).lstrip()
            lines.append(f"{pad}- {body}")
    else:
        lines.append(f"{pad}{json.dumps(value)}")
    return "\n".join(lines)


def render(t: Thresholds | None = None) -> dict[Path, str]:
    """The pack's files, relative path -> content."""
    header = ("# Generated by `python -m spanguard.opspack` from spanguard's metric names;\n"
              "# do not edit by hand (a test regenerates and compares it).\n")
    return {RULES_FILE: header + to_yaml(rules(t)) + "\n",
            DASHBOARD_FILE: json.dumps(dashboard(t), indent=2) + "\n"}


def write(directory: Path, t: Thresholds | None = None) -> list[Path]:
    written = []
    for relative, content in render(t).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, "utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a thin command over write()
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "ops")):
        print(path)
