"""Hold rules, the hold guard's lifecycle, the MCP result payload, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spanguard import semconv as sc
from spanguard.cli import main
from spanguard.errors import ConfigError
from spanguard.guardrails import (
    HoldPending,
    HoldRules,
    Policy,
    ToolCall,
    approve,
    get_hold,
    list_holds,
    wait_for_decision,
)
from spanguard.guardrails.audit import open_audit_log
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.holds import (
    HoldGuard,
    annotation_class,
    hold_result_payload,
    parse_duration,
)
from spanguard.testing import SpanCapture
from tests.guardrails._holds_support import Clock, memory_approvals


def call(tool: str = "payments_send", annotations: dict[str, object] | None = None,
         **arguments: object) -> ToolCall:
    return ToolCall(tool=tool, arguments=arguments or {"to": "bob", "amount": 5},
                    annotations=annotations)


@pytest.mark.parametrize(("annotations", "expected"), [
    (None, None),
    ({}, "non_idempotent_mutation"),
    ({"destructiveHint": True}, "destructive"),
    ({"readOnlyHint": True}, "read_only"),
    ({"readOnlyHint": False, "idempotentHint": True}, "idempotent_mutation"),
    ({"read_only_hint": True}, "read_only"),
])
def test_annotation_classes_follow_the_mcp_hints(annotations: dict[str, object] | None,
                                                 expected: str | None) -> None:
    assert annotation_class(annotations) == expected


def test_rules_match_by_glob_class_and_high_risk() -> None:
    rules = HoldRules(tools=("payments_*", "git_reset"), high_risk=True,
                      classes={"wire": "destructive"})
    assert "payments_*" in (rules.match(call("payments_refund")) or "")
    assert rules.match(call("git_reset")) is not None
    assert rules.match(call("git_status", {"readOnlyHint": True})) is None
    assert rules.match(call("git_commit", {})) is not None  # no read-only/idempotent hint
    assert rules.match(call("git_add", {"idempotentHint": True})) is None
    assert rules.match(call("wire")) is not None  # class declared in the policy
    assert rules.match(call("search")) is None  # no hints, no name match
    by_class = HoldRules(action_classes=frozenset({"idempotent_mutation"}))
    assert by_class.match(call("git_add", {"idempotentHint": True})) is not None


def test_policy_file_tables_parse_and_bad_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[holds]\nhigh_risk = true\ntools = ["payments_*", "git_reset"]\n'
                    'expires_after = "30m"\n'
                    '[verify]\nhold_on_failure = true\n'
                    '[verify.git_commit]\ncall = "git_log"\n'
                    'arguments = { repo_path = "{repo_path}" }\n'
                    'expect_contains = "{message}"\n')
    policy = Policy.from_file(path)
    assert policy.holds is not None and policy.holds.expires_after == 1800
    assert policy.holds.tools == ("payments_*", "git_reset")
    assert policy.verify is not None and policy.verify.hold_on_failure
    assert policy.verify.read_back_request("git_commit", {"repo_path": "/r", "message": "m"}) \
        == ("git_log", {"repo_path": "/r"})
    for bad in ({"tools": "payments_*"}, {"expires_after": "soon"},
                {"high_risk": "yes"}, {"action_classes": ["scary"]}, {"typo": 1}):
        with pytest.raises(ConfigError):
            Policy.from_mapping({"holds": bad})
    with pytest.raises(ConfigError, match="call"):
        Policy.from_mapping({"verify": {"git_commit": {"arguments": {}}}})


def test_durations() -> None:
    assert parse_duration("1h", "t") == 3600
    assert parse_duration("2d", "t") == 172800
    assert parse_duration(90, "t") == 90
    with pytest.raises(ConfigError):
        parse_duration("0s", "t")


def test_held_call_is_stored_with_everything_the_checker_needs() -> None:
    clock = Clock()
    approvals = memory_approvals(clock)
    guard = HoldGuard(HoldRules(tools=("payments_*",), expires_after=600),
                      approvals=approvals)
    decision = guard.check(call(), maker="alice", trace_id="t" * 32, span_id="s" * 16)
    assert decision is not None and decision.kind == "hold"
    held = decision.error
    assert isinstance(held, HoldPending)
    hold = approvals.get(held.hold_id)
    assert (hold.tool, hold.maker, hold.status, hold.risk_tier) == (
        "payments_send", "alice", "pending", "high")
    assert hold.payload_hash.startswith("sha256:")
    assert (hold.trace_id, hold.span_id) == ("t" * 32, "s" * 16)
    assert hold.expires_at - hold.created_at == 600
    assert '"amount":5' in hold.summary and "alice" in hold.summary
    assert held.approve_command == f"spanguard holds approve {hold.id} --as NAME"
    assert decision.attributes[sc.HOLD_ID] == hold.id
    # the maker retrying before a decision gets the same request, not a new one
    again = guard.check(call(), maker="alice")
    assert again is not None and again.attributes[sc.HOLD_ID] == hold.id
    assert len(approvals.list()) == 1
    assert [r.event for r in approvals.audit.records()] == ["hold.created"]


def test_approved_call_runs_once_then_needs_a_new_approval() -> None:
    approvals = memory_approvals()
    guard = HoldGuard(HoldRules(tools=("payments_*",)), approvals=approvals)
    first = guard.check(call(), maker="alice")
    assert first is not None and isinstance(first.error, HoldPending)
    approvals.approve(first.error.hold_id, "carol", "looks right")
    allowed = guard.check(call(), maker="alice")
    assert allowed is not None and allowed.kind == "allow"
    assert approvals.get(first.error.hold_id).status == "executed"
    after = guard.check(call(), maker="alice")
    assert after is not None and after.kind == "hold"
    assert after.attributes[sc.HOLD_ID] != first.error.hold_id
    assert [r.event for r in approvals.audit.records()] == [
        "hold.created", "hold.approved", "hold.executed", "hold.created"]


def test_unmatched_calls_never_touch_the_store() -> None:
    approvals = memory_approvals()
    guard = HoldGuard(HoldRules(tools=("payments_*",)), approvals=approvals)
    assert guard.check(call("search"), maker="alice") is None
    assert approvals.list() == [] and approvals.audit.records() == []


def test_enforcer_raises_hold_pending_and_records_a_guardrail_span(cap: SpanCapture) -> None:
    approvals = memory_approvals()
    enforcer = Enforcer(Policy(), cap.tracer_provider,
                        guards=[HoldGuard(HoldRules(tools=("git_reset",)), approvals=approvals)])
    run = enforcer.start_run("r1", identity="alice")
    tracer = cap.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("execute_tool git_reset") as span, \
            pytest.raises(HoldPending) as raised:
        enforcer.before_tool_call(run, ToolCall("git_reset", {"repo_path": "/r"}), span)
    root = cap.tree()
    guardrail = root.find("guardrail holds")
    assert guardrail.attributes[sc.GUARDRAIL_DECISION] == "hold"
    assert guardrail.attributes[sc.HOLD_ID] == raised.value.hold_id
    stored = approvals.get(raised.value.hold_id)
    assert stored.trace_id == root.span.trace_id and stored.span_id == root.span.span_id


def test_mcp_result_payload_says_held_with_id_and_command() -> None:
    approvals = memory_approvals()
    guard = HoldGuard(HoldRules(tools=("git_commit",)), approvals=approvals)
    decision = guard.check(ToolCall("git_commit", {"repo_path": "/r", "message": "m"}),
                           maker="agent")
    assert decision is not None and isinstance(decision.error, HoldPending)
    payload = hold_result_payload(decision.error)
    hold_id = decision.error.hold_id
    assert payload["isError"] is True
    text = payload["content"][0]["text"]
    assert hold_id in text and f"spanguard holds approve {hold_id} --as NAME" in text
    structured = payload["structuredContent"]["spanguard_hold"]
    assert structured["status"] == "held" and structured["hold_id"] == hold_id
    assert structured["executed"] is False
    json.dumps(payload)  # plain JSON, ready for the wire


def test_wait_for_decision_returns_once_decided(tmp_path: Path) -> None:
    approvals = memory_approvals()
    guard = HoldGuard(HoldRules(tools=("git_commit",)), approvals=approvals)
    decision = guard.check(ToolCall("git_commit", {"m": 1}), maker="agent")
    assert decision is not None and decision.error is not None
    hold_id = decision.error.hold_id  # type: ignore[attr-defined]
    polls: list[float] = []

    def approve_on_second_poll(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:
            approvals.approve(hold_id, "carol")

    decided = approvals.wait_for_decision(hold_id, timeout=60, poll_interval=0.01,
                                          sleep=approve_on_second_poll)
    assert decided.status == "approved" and len(polls) == 2
    timed_out = guard.check(ToolCall("git_commit", {"m": 2}), maker="agent")
    assert timed_out is not None and timed_out.error is not None
    still = approvals.wait_for_decision(timed_out.error.hold_id,  # type: ignore[attr-defined]
                                        timeout=0)
    assert still.status == "pending"


def _held(store_url: str) -> str:
    guard = HoldGuard(HoldRules(tools=("git_reset",)), store_url=store_url)
    decision = guard.check(ToolCall("git_reset", {"repo_path": "/r"}), maker="alice")
    assert decision is not None and decision.error is not None
    return decision.error.hold_id  # type: ignore[attr-defined, no-any-return]


def test_cli_lists_shows_approves_with_scriptable_exit_codes(
        capsys: pytest.CaptureFixture[str]) -> None:
    hold_id = _held(store_url="")  # "" -> the default store under the home
    assert main(["holds", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["id"] for h in listed] == [hold_id] and listed[0]["status"] == "pending"
    assert main(["holds", "show", hold_id]) == 0
    shown = capsys.readouterr().out
    assert "git_reset" in shown and f"spanguard holds approve {hold_id}" in shown
    assert main(["holds", "show", "hold_nope"]) == 3
    assert main(["holds", "approve", hold_id, "--as", "alice"]) == 1  # the maker
    assert "cannot also decide" in capsys.readouterr().out
    assert main(["holds", "approve", hold_id, "--as", "carol", "--reason", "ok"]) == 0
    assert "approved by carol" in capsys.readouterr().out
    assert main(["holds", "reject", hold_id, "--as", "dave"]) == 1  # already decided
    assert get_hold(hold_id).checker == "carol"
    assert [h.status for h in list_holds()] == ["approved"]


def test_python_api_uses_the_default_store() -> None:
    hold_id = _held(store_url="")
    approve(hold_id, "carol")
    assert wait_for_decision(hold_id, timeout=0).status == "approved"


def test_cli_audit_verify_and_list(capsys: pytest.CaptureFixture[str],
                                   spanguard_home: Path) -> None:
    hold_id = _held(store_url="")
    approve(hold_id, "carol", "fine")
    assert main(["audit", "verify"]) == 0
    assert "intact: 2 record(s)" in capsys.readouterr().out
    assert main(["audit", "list", "--json"]) == 0
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert events == ["hold.created", "hold.approved"]
    import sqlite3

    db = sqlite3.connect(spanguard_home / "guardrails.db")
    row = db.execute("SELECT record FROM audit WHERE seq = 2").fetchone()
    record = json.loads(row[0])
    record["actor"] = "alice"  # someone rewrites who approved
    db.execute("UPDATE audit SET record = ? WHERE seq = 2", (json.dumps(record),))
    db.commit()
    db.close()
    assert main(["audit", "verify"]) == 1
    assert "BROKEN at record 2" in capsys.readouterr().out
    assert open_audit_log().verify().broken_seq == 2


def test_tools_or_servers_marked_read_only_are_not_held_by_high_risk() -> None:
    rules = HoldRules(high_risk=True, read_only=("calculate", "list_*"),
                      read_only_servers=("docs-*",), tools=("list_secrets",))
    no_hints: dict[str, object] = {}
    assert rules.matched(call("calculate", no_hints)) is None
    assert rules.matched(call("list_tables", no_hints)) is None
    assert rules.matched(ToolCall("search", {}, annotations={}, server="docs-prod")) is None
    assert rules.action_class(call("list_tables", no_hints)) == "read_only"
    held = rules.matched(ToolCall("search", {}, annotations={}, server="crm"))
    assert held is not None and held.rule == "high_risk"
    assert held.action_class == "non_idempotent_mutation"
    assert "neither readOnlyHint nor idempotentHint" in held.reason
    assert "[holds] read_only" in held.reason  # says how to mark it, if it only reads
    explicit = rules.matched(call("list_secrets", no_hints))  # an explicit hold wins
    assert explicit is not None and explicit.rule == "tools" and "'list_secrets'" in \
        explicit.reason
    destructive = rules.matched(call("drop", {"destructiveHint": True}))
    assert destructive is not None and "declares destructiveHint" in destructive.reason
    assert HoldRules(high_risk=True).matched(call("calculate", no_hints)) is not None


def test_the_held_result_says_which_rule_matched() -> None:
    approvals = memory_approvals()
    guard = HoldGuard(HoldRules(high_risk=True, read_only=("calculate",)),
                      approvals=approvals)
    decision = guard.check(call("list_tables", {}), maker="agent")
    assert decision is not None and isinstance(decision.error, HoldPending)
    stored = approvals.get(decision.error.hold_id)
    assert (stored.rule, stored.action_class) == ("high_risk", "non_idempotent_mutation")
    structured = hold_result_payload(decision.error)["structuredContent"]["spanguard_hold"]
    assert structured["rule"] == "high_risk"
    assert structured["action_class"] == "non_idempotent_mutation"
    assert "neither readOnlyHint nor idempotentHint" in structured["reason"]
    assert structured["reason"] in hold_result_payload(decision.error)["content"][0]["text"]
    created = approvals.audit.records()[0]
    assert created.detail["rule"] == "high_risk"
