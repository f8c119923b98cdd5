"""``spanguard report``: figures on a known set of traces written to a temporary store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from spanguard import semconv as sc
from spanguard.attributes import (
    agent_attributes,
    cost_attributes,
    guardrail_attributes,
    model_attributes,
    run_identity_attributes,
    tool_attributes,
    usage_attributes,
)
from spanguard.cli import main
from spanguard.cli.report import parse_since
from spanguard.hashing import KeyedHasher
from spanguard.report import build_report, percentile
from spanguard.store import StoredSpan, TraceStore

T0 = 1_600_000_000_000_000_000  # 2020-09-13, in ns
MS = 1_000_000


# Runs and outcomes carry the conversation hashed with one key, as record_outcome does.
HASHER = KeyedHasher(b"report-test-key-16b")


def span(trace: str, span_id: str, parent: str | None, name: str, start_ms: int, dur_ms: int,
         attributes: dict[str, Any], status: str = "UNSET", start: int = T0) -> StoredSpan:
    begin = start + start_ms * MS
    return StoredSpan(trace_id=trace * 32, span_id=span_id * 16, parent_span_id=(
        parent * 16 if parent else None), name=name, kind="INTERNAL", start_time=begin,
        end_time=begin + dur_ms * MS, status=status, status_message=None,
        attributes=attributes)


def run_root(trace: str, agent: str, tenant: str, conversation: str, start_ms: int, dur_ms: int,
             error: str | None = None, totals: tuple[int, int, float | None] | None = None,
             start: int = T0) -> StoredSpan:
    attrs = {**agent_attributes(agent),
             **run_identity_attributes(conversation_id=conversation, tenant_hash=tenant,
                                       hasher=HASHER)}
    if totals is not None:
        attrs[sc.RUN_TOTAL_INPUT_TOKENS], attrs[sc.RUN_TOTAL_OUTPUT_TOKENS] = totals[:2]
        attrs.update(cost_attributes(totals[2]))
        if totals[2] is not None:
            attrs[sc.RUN_TOTAL_COST_USD] = totals[2]
    if error:
        attrs[sc.ERROR_TYPE] = error
    return span(trace, "a", None, f"invoke_agent {agent}", start_ms, dur_ms, attrs,
                "ERROR" if error else "UNSET", start)


def llm(trace: str, span_id: str, model: str, tokens: tuple[int, int], cost: float | None,
        start: int = T0) -> StoredSpan:
    return span(trace, span_id, "a", f"chat {model}", 1, 5, {
        **model_attributes(model), **usage_attributes(*tokens), **cost_attributes(cost)},
        start=start)


def known_traces(now_ns: int) -> list[StoredSpan]:
    return [
        # A: planner/t1, ok, 100 ms, gpt-4o, rolled-up totals, accepted (outcome in-trace)
        run_root("1", "planner", "hmac:t1", "c1", 0, 100, totals=(100, 10, 0.01)),
        llm("1", "b", "gpt-4o", (100, 10), 0.01),
        span("1", "c", "a", "user_outcome accepted", 500, 0, {sc.OUTCOME_ACTION: "accepted"}),
        # B: planner/t1, loop refusal, 200 ms, no roll-up (falls back to model spans)
        run_root("2", "planner", "hmac:t1", "c2", 1000, 200, error="LoopBudgetExceeded"),
        llm("2", "b", "gpt-4o", (300, 0), 0.03),
        span("2", "c", "a", "guardrail loop_budget", 150, 1, {
            **guardrail_attributes("loop_budget", "deny"),
            sc.ERROR_TYPE: "LoopBudgetExceeded"}, "ERROR"),
        # C: support/t2, ok, 300 ms, two models, a pending hold and an approved one
        run_root("3", "support", "hmac:t2", "c3", 2000, 300, totals=(70, 7, 0.007)),
        llm("3", "b", "claude-3-5-haiku", (50, 5), 0.005),
        llm("3", "c", "gpt-4o", (20, 2), 0.002),
        span("3", "d", "a", "execute_tool refund", 10, 1, {
            **tool_attributes("refund"), sc.HOLD_ID: "h1", sc.HOLD_STATUS: "pending"}),
        span("3", "e", "a", "guardrail holds", 20, 1, {
            **guardrail_attributes("holds", "hold"), sc.HOLD_ID: "h2"}),
        # E: the resumed run of c3 (no model call) executes h2 after its approval
        run_root("5", "support", "hmac:t2", "c3", 9000, 50),
        span("5", "b", "a", "execute_tool refund", 9001, 1, {
            **tool_attributes("refund"), sc.HOLD_ID: "h2", sc.HOLD_STATUS: "approved"}),
        # outcomes for C by conversation only, in their own traces, after the run
        span("6", "a", None, "user_outcome converted", 5000, 0, {
            sc.OUTCOME_ACTION: "converted",
            sc.GEN_AI_CONVERSATION_ID: HASHER.conversation_id("c3")}),
        span("7", "a", None, "user_outcome dismissed", 5001, 0, {
            sc.OUTCOME_ACTION: "dismissed", sc.OUTCOME_TARGET_TRACE_ID: "3" * 32}),
        # D: support/t2, recent, failed, unknown price
        run_root("4", "support", "hmac:t2", "c4", 0, 400, error="TimeoutError",
                 totals=(10, 1, None), start=now_ns),
        llm("4", "b", "claude-3-5-haiku", (10, 1), None, start=now_ns),
    ]


@pytest.fixture
def store(spanguard_home: Path) -> TraceStore:
    store = TraceStore.in_home(spanguard_home)
    store.write(known_traces(time.time_ns() - 60 * 1_000_000_000))
    return store


def by_key(store: TraceStore, by: str, since: int = 0) -> dict[str, dict[str, Any]]:
    return {g.key: g.to_json(by) for g in build_report(store.spans(since), by)}  # type: ignore[arg-type]


def test_by_agent(store: TraceStore) -> None:
    report = by_key(store, "agent")
    planner, support = report["planner"], report["support"]
    assert planner["runs"] == 2 and planner["errors"] == 1
    assert planner["error_rate_by_type"] == {"LoopBudgetExceeded": 0.5}
    assert (planner["p50_ms"], planner["p95_ms"]) == (100, 200)
    assert (planner["input_tokens"], planner["output_tokens"]) == (400, 10)
    assert planner["cost_usd"] == pytest.approx(0.04)
    assert planner["outcomes"] == {"accepted": 1}
    assert planner["cost_per_successful_outcome"] == pytest.approx(0.04)
    assert planner["loop_refusals"] == 1 and planner["holds_pending"] == 0

    assert support["runs"] == 3
    assert support["error_rate_by_type"] == {"TimeoutError": pytest.approx(1 / 3)}
    assert (support["p50_ms"], support["p95_ms"]) == (300, 400)
    assert (support["input_tokens"], support["output_tokens"]) == (80, 8)
    assert support["cost_usd"] == pytest.approx(0.007)
    assert support["runs_cost_unknown"] == 1
    assert support["outcomes"] == {"converted": 1, "dismissed": 1}
    assert support["cost_per_successful_outcome"] == pytest.approx(0.007)
    assert support["holds_pending"] == 1  # h1; h2 was approved later
    assert support["loop_refusals"] == 0
    assert list(report) == ["planner", "support"]  # most expensive first


def test_by_tenant_matches_by_agent_here(store: TraceStore) -> None:
    tenants = by_key(store, "tenant")
    agents = by_key(store, "agent")
    for tenant, agent in (("hmac:t1", "planner"), ("hmac:t2", "support")):
        assert {k: v for k, v in tenants[tenant].items() if k not in ("by", "key")} == {
            k: v for k, v in agents[agent].items() if k not in ("by", "key")}


def test_by_model_splits_tokens_and_cost_by_model(store: TraceStore) -> None:
    report = by_key(store, "model")
    gpt, claude = report["gpt-4o"], report["claude-3-5-haiku"]
    assert gpt["runs"] == 3 and gpt["errors"] == 1
    assert (gpt["input_tokens"], gpt["output_tokens"]) == (420, 12)
    assert gpt["cost_usd"] == pytest.approx(0.042)
    assert gpt["successful_outcomes"] == 2
    assert gpt["cost_per_successful_outcome"] == pytest.approx(0.021)
    assert gpt["loop_refusals"] == 1 and gpt["holds_pending"] == 1
    assert claude["runs"] == 2 and claude["error_rate_by_type"] == {"TimeoutError": 0.5}
    assert (claude["input_tokens"], claude["output_tokens"]) == (60, 6)
    assert claude["cost_usd"] == pytest.approx(0.005)
    assert claude["runs_cost_unknown"] == 1
    assert report["(none)"]["runs"] == 1  # the resumed run called no model


def test_since_keeps_only_recent_runs(store: TraceStore) -> None:
    report = by_key(store, "agent", since=parse_since("1h"))
    assert list(report) == ["support"]
    assert report["support"]["runs"] == 1
    assert report["support"]["error_rate_by_type"] == {"TimeoutError": 1.0}


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 21)]
    assert (percentile(values, 50), percentile(values, 95)) == (10.0, 19.0)
    assert percentile([], 50) is None


def test_parse_since_windows_and_dates() -> None:
    now = 1_700_000_000.0
    assert parse_since("30m", now) == int((now - 1800) * 1e9)
    assert parse_since("7d", now) == int((now - 7 * 86400) * 1e9)
    assert parse_since("2020-09-13") == 1_599_955_200 * 10**9


def test_cli_json_and_table(store: TraceStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--by", "agent", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["key"], r["runs"], r["loop_refusals"]) for r in rows] == [
        ("planner", 2, 1), ("support", 3, 0)]
    assert main(["report", "--by", "model"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("MODEL")
    assert "gpt-4o" in out and "LoopBudgetExceeded 1" in out


def test_cli_bad_since_is_a_usage_error(store: TraceStore,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--since", "yesterday-ish"]) == 2
    assert "--since" in capsys.readouterr().err


def test_cli_on_an_empty_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 0
    assert "no runs" in capsys.readouterr().out


def test_a_hold_approved_and_executed_is_not_pending() -> None:
    # The proxy records the hold as a guardrail span; the approved call that then
    # runs is an allow decision, i.e. an event carrying the hold's new status.
    root = run_root("e", "gitbot", "t1", "c9", 0, 50)
    held = span("e", "h", "a", "guardrail holds", 2, 1, {
        **guardrail_attributes("holds", "hold"), sc.HOLD_ID: "h9", sc.HOLD_STATUS: "pending"})
    tool = span("e", "t", "a", "tools/call git_commit", 1, 40, tool_attributes("git_commit"))
    executed = StoredSpan(**{**tool.__dict__, "events": [{
        "name": "guardrail holds", "timestamp": T0 + 30 * MS,
        "attributes": {sc.GUARDRAIL_DECISION: "allow", sc.HOLD_ID: "h9",
                       sc.HOLD_STATUS: "executed"}}]})
    (group,) = build_report([root, held, executed], by="agent")
    assert group.holds_pending == 0
    (still_pending,) = build_report([root, held, tool], by="agent")
    assert still_pending.holds_pending == 1
