"""The operations pack: generated from the code's metric names, valid for promtool, firing.

- The committed rule file and dashboard are exactly what the generator makes.
- Every series the rules read is produced by the code itself: real guard
  decisions, routing spans, a run's cost and a redaction go through
  OpenTelemetry's Prometheus exporter, and the exposition text must have each
  series (with the labels the rules filter on).
- ``promtool check rules`` accepts the file, and ``promtool test rules`` proves
  alerts fire on the series the code emits (and stay quiet without them).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client import REGISTRY, generate_latest

from spanguard import opspack
from spanguard import semconv as sc
from spanguard.exporters.redacting import RedactingExporter
from spanguard.guardrails import HoldRules, Policy
from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.citations import Citations
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.holds import HoldGuard, HoldPending
from spanguard.guardrails.steps import Answer, ToolCall
from spanguard.guardrails.stores import MemoryStore
from spanguard.metrics import MetricsSpanProcessor
from spanguard.redaction import Redactor
from spanguard.testing import capture
from tests.conftest import repo_root

OPS = repo_root() / "ops"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run `make test` (it installs Debian's "
                    "prometheus package)")
    return found


def test_the_committed_pack_is_what_the_generator_makes() -> None:
    for relative, content in opspack.render().items():
        assert (OPS / relative).read_text("utf-8") == content, (
            f"ops/{relative} is stale: run `python -m spanguard.opspack ops`")


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules",
                             str(OPS / opspack.RULES_FILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 14 rules found" in result.stdout


def test_every_slo_of_the_seed_has_a_warning_and_a_critical_alert() -> None:
    slos = opspack.slos()
    assert {s.key for s in slos} == {"cost_control", "loop_containment", "action_integrity",
                                     "privacy_redaction", "fallback_integrity",
                                     "tenant_safety", "reviewer_attention"}
    for slo in slos:
        assert sorted(a.severity for a in slo.alerts) == ["critical", "warning"]


def test_the_dashboard_queries_are_the_rules_queries() -> None:
    board = json.loads((OPS / opspack.DASHBOARD_FILE).read_text("utf-8"))
    exprs = {t["expr"] for p in board["panels"] for t in p.get("targets", [])}
    alerts = {r["expr"] for g in opspack.rules()["groups"] for r in g["rules"]}
    assert alerts <= exprs
    assert [p["title"] for p in board["panels"] if p["type"] == "row"] == [
        s.title for s in opspack.slos()]


@pytest.fixture
def exposition() -> Iterator[str]:
    """The Prometheus text of real measurements made by spanguard's own code."""
    reader = PrometheusMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    try:
        cap = capture()
        # Guard decisions: a finding (citation), a budget-style denial, review latency.
        store = MemoryStore()
        clock = iter(range(1000, 2000, 5))
        approvals = Approvals.over(store, lambda: float(next(clock)))
        hold = HoldGuard(HoldRules(tools=("pay",)), approvals=approvals)
        guards = Enforcer(Policy(citations=Citations(action="flag")), cap.tracer_provider,
                          meters, store=store)
        holds = Enforcer(Policy(), cap.tracer_provider, meters, guards=[hold], store=store)
        run = guards.start_run("r")
        guards.check_answer(run, Answer("see [source: nowhere]"), None)
        maker = holds.start_run("m", identity="maker")
        with pytest.raises(HoldPending) as pending:
            holds.before_tool_call(maker, ToolCall("pay", {"a": 1}), None)
        approvals.approve(pending.value.hold_id, "checker")
        holds.before_tool_call(maker, ToolCall("pay", {"a": 1}), None)
        # Span-derived metrics: a routed model call, a run's cost, a tool call.
        processor = MetricsSpanProcessor(meters)
        tracing = capture(processor)
        tracer = tracing.tracer_provider.get_tracer("t")
        with tracer.start_as_current_span("invoke_agent a", attributes={
                sc.RUN_TOTAL_COST_USD: 0.5, sc.TENANT_HASH: "hmac:0123456789abcdef"}):
            with tracer.start_as_current_span("chat r", attributes={
                    sc.ROUTING_STATUS: "degraded", sc.ROUTING_REASON: "failover",
                    sc.ROUTING_DISCLOSURE_REQUIRED: True}):
                pass
            with tracer.start_as_current_span("execute_tool t", attributes={
                    sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: "t"}):
                pass
        processor.force_flush()
        # A redaction on export.
        exported: list[object] = []

        class Sink:
            def export(self, spans: object) -> SpanExportResult:
                exported.append(spans)
                return SpanExportResult.SUCCESS

            def shutdown(self) -> None:
                return None

            def force_flush(self, timeout_millis: int = 0) -> bool:
                return True

        cap2 = capture()
        with cap2.tracer_provider.get_tracer("t").start_as_current_span(
                "chat m", attributes={sc.GEN_AI_INPUT_MESSAGES: "mail alice@example.com"}):
            pass
        RedactingExporter(Sink(), Redactor(), meters).export(
            cap2.exporter.get_finished_spans())  # type: ignore[arg-type]
        yield generate_latest(REGISTRY).decode()
    finally:
        meters.shutdown()  # unregisters the reader's collector from REGISTRY


def test_every_series_the_rules_read_is_emitted_by_the_code(exposition: str) -> None:
    emitted = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
               if line and not line.startswith("#")}
    for metric in opspack.METRICS.values():
        names = ([f"{metric.prometheus}_{s}" for s in ("bucket", "sum", "count")]
                 if metric.kind == "histogram" else [metric.prometheus])
        for name in names:
            assert name in emitted, f"{name} not emitted; emitted: {sorted(emitted)}"
    referenced = set()
    for group in opspack.rules()["groups"]:
        for rule in group["rules"]:
            referenced |= set(re.findall(r"\b([a-z_]+_(?:total|bucket|sum|count))\b",
                                         rule["expr"]))
    assert referenced <= emitted
    for label in ("error_type", "spanguard_guardrail_name", "spanguard_guardrail_decision",
                  "route_status", "spanguard_review_decision", "spanguard_redaction_outcome",
                  "spanguard_tenant_hash"):
        assert f'{label}="' in exposition, label


RULE_TEST = """
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'spanguard_guardrail_findings_total{{error_type="tenant_scope_violation",
          spanguard_guardrail_name="tenant_scope"}}'
        values: '0 1 2 9 15 15 15 15 15 15 15 15 15 15 15 15 15 15'
      - series: 'spanguard_routing_decisions_total{{route_status="failed_closed",
          routing_reason="failover",user_disclosure_required="true"}}'
        values: '0 0 0 0 1 1 1 1 1 1'
      - series: 'spanguard_review_duration_seconds_sum{{spanguard_review_decision="approved"}}'
        values: '0+0.3x120'
      - series: 'spanguard_review_duration_seconds_count{{spanguard_review_decision="approved"}}'
        values: '0+1x120'
    alert_rule_test:
      - eval_time: 3m
        alertname: SpanguardTenantBoundaryBlocked
        exp_alerts:
          - exp_labels: {{severity: warning, slo: tenant_safety}}
            exp_annotations:
              summary: "Another tenant's document or result was blocked"
              sli: "Cross-tenant retrieval/tool mismatch events"
              slo_target: "No accepted cross-tenant boundary violation"
              runbook: "Isolate the scope, revoke implicated credentials, create an incident"
      - eval_time: 5m
        alertname: SpanguardTenantBoundaryRepeated
        exp_alerts:
          - exp_labels: {{severity: critical, slo: tenant_safety}}
            exp_annotations:
              summary: "Repeated attempted boundary crossing"
              sli: "Cross-tenant retrieval/tool mismatch events"
              slo_target: "No accepted cross-tenant boundary violation"
              runbook: "Isolate the scope, revoke implicated credentials, create an incident"
      - eval_time: 2m
        alertname: SpanguardRoutesFailedClosed
        exp_alerts: []
      - eval_time: 6m
        alertname: SpanguardRoutesFailedClosed
        exp_alerts:
          - exp_labels: {{severity: critical, slo: fallback_integrity}}
            exp_annotations:
              summary: "Calls ended with no route: blocked or failed closed"
              sli: "Route downgrade with disclosure and quality-floor preservation"
              slo_target: "All degradations are policy-preserving and observable"
              runbook: "Disable the route, fail closed, or require a user/reviewer choice"
      - eval_time: 100m
        alertname: SpanguardFastApprovals
        exp_alerts:
          - exp_labels: {{severity: warning, slo: reviewer_attention}}
            exp_annotations:
              summary: "Mean approval latency is under the review floor"
              sli: "Approval latency (hold shown -> decision) and approvals under the floor"
              slo_target: "Reviews take long enough to read the request"
              runbook: "Add cognitive forcing to the review UI, audit the reviewer's approvals"
"""


def test_promtool_proves_the_alerts_fire_on_the_codes_series(tmp_path: Path) -> None:
    test_file = tmp_path / "slo_test.yml"
    test_file.write_text(RULE_TEST.format(rules=OPS / opspack.RULES_FILE))
    result = subprocess.run([promtool(), "test", "rules", str(test_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
