"""Post-action verification: functions, policy read-backs, span status, suspension."""

from __future__ import annotations

from typing import Any

import pytest

from spanguard import semconv as sc
from spanguard.guardrails import (
    Policy,
    ReadBackCheck,
    RunState,
    ToolCall,
    ToolOutcome,
    Verification,
)
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.holds import HoldGuard
from spanguard.guardrails.verify import VerifyGuard, record_verification
from spanguard.testing import SpanCapture
from tests.guardrails._holds_support import memory_approvals

COMMIT = ToolCall("git_commit", {"repo_path": "/repo", "message": "fix the bug"})
CHECK = ReadBackCheck("git_log", {"repo_path": "{repo_path}", "max_count": 5},
                      "{message}")


def test_function_verifier_statuses_and_crashes_are_unknown() -> None:
    verification = Verification({
        "ok": lambda args, result: "verified",
        "bad": lambda args, result: "failed",
        "odd": lambda args, result: "yes",
        "boom": lambda args, result: 1 / 0,
    })
    assert verification.verify("ok", {}, "done").status == "verified"  # type: ignore[union-attr]
    assert verification.verify("bad", {}, "done").status == "failed"  # type: ignore[union-attr]
    assert verification.verify("odd", {}, "x").status == "unknown"  # type: ignore[union-attr]
    crashed = verification.verify("boom", {}, "x")
    assert crashed is not None and crashed.status == "unknown"
    assert "ZeroDivisionError" in crashed.detail
    assert verification.verify("no_verifier", {}, "success!") is None  # never "verified"


def test_read_back_renders_arguments_and_checks_the_text() -> None:
    verification = Verification({"git_commit": CHECK})
    calls: list[tuple[str, dict[str, Any]]] = []

    def read_back(tool: str, arguments: Any) -> Any:
        calls.append((tool, dict(arguments)))
        return {"content": [{"type": "text", "text": "Commit: abc\nMessage: fix the bug"}],
                "isError": False}

    result = verification.verify("git_commit", COMMIT.arguments, "Committed", read_back)
    assert result is not None and result.status == "verified"
    assert calls == [("git_log", {"repo_path": "/repo", "max_count": 5})]
    missing = verification.verify("git_commit", COMMIT.arguments, "Committed",
                                  lambda t, a: "Message: something else")
    assert missing is not None and missing.status == "failed"
    errored = verification.verify("git_commit", COMMIT.arguments, "Committed",
                                  lambda t, a: {"content": [], "isError": True})
    assert errored is not None and errored.status == "unknown"
    no_adapter = verification.verify("git_commit", COMMIT.arguments, "Committed")
    assert no_adapter is not None and no_adapter.status == "unknown"


async def test_async_read_back_for_async_adapters() -> None:
    verification = Verification({"git_commit": CHECK})

    async def read_back(tool: str, arguments: Any) -> str:
        return "Message: fix the bug"

    result = await verification.averify("git_commit", COMMIT.arguments, "ok", read_back)
    assert result is not None and result.status == "verified"


def test_status_on_the_span_and_error_when_not_confirmed(cap: SpanCapture) -> None:
    tracer = cap.tracer_provider.get_tracer("t")
    verification = Verification({"a": lambda *_: "verified", "b": lambda *_: "unknown"})
    with tracer.start_as_current_span("execute_tool a") as span:
        record_verification(span, verification.verify("a", {}, None))
    with tracer.start_as_current_span("execute_tool b") as span:
        record_verification(span, verification.verify("b", {}, None))
    with tracer.start_as_current_span("execute_tool c") as span:
        record_verification(span, verification.verify("c", {}, None))
    a, b, c = (next(s for s in cap.spans() if s.name == f"execute_tool {n}") for n in "abc")
    assert a.attributes[sc.VERIFICATION_STATUS] == "verified" and a.status != "ERROR"
    assert b.attributes[sc.VERIFICATION_STATUS] == "unknown"
    assert b.status == "ERROR"
    assert sc.VERIFICATION_STATUS not in (c.attributes or {})


def test_failed_verification_is_audited_and_holds_the_next_call() -> None:
    approvals = memory_approvals()
    outcome_text = {"value": "Message: other"}
    verification = Verification({"git_commit": CHECK}, hold_on_failure=True)
    verify_guard = VerifyGuard(verification, approvals=approvals)
    hold_guard = HoldGuard(None, approvals=approvals, watched_tools=verification.watched_tools())
    enforcer = Enforcer(Policy(), guards=[hold_guard, verify_guard],
                        audit_sink=lambda *args: None)
    run = RunState("r", identity="agent")
    enforcer.before_tool_call(run, COMMIT, None)  # nothing held yet
    outcome = ToolOutcome("Committed", read_back=lambda t, a: outcome_text["value"])
    [decision] = enforcer.after_tool_call(run, COMMIT, outcome, None)
    assert decision.attributes[sc.VERIFICATION_STATUS] == "failed"
    assert decision.error is not None and "not confirmed" in str(decision.error)
    held = hold_guard.check(COMMIT, maker="agent")
    assert held is not None and held.kind == "hold"
    assert "not verified" in held.reason
    hold_id = held.attributes[sc.HOLD_ID]
    approvals.approve(hold_id, "reviewer")
    assert hold_guard.check(COMMIT, maker="agent").kind == "allow"  # type: ignore[union-attr]
    outcome_text["value"] = "Message: fix the bug"
    [decision] = enforcer.after_tool_call(run, COMMIT, outcome, None)
    assert decision.attributes[sc.VERIFICATION_STATUS] == "verified"
    assert hold_guard.check(COMMIT, maker="agent") is None  # suspension lifted
    events = [r.event for r in approvals.audit.records()]
    assert events[0] == "verification.failed" and "verification.verified" in events
    assert approvals.audit.verify().ok


def test_tool_errors_are_not_verified() -> None:
    guard = VerifyGuard(Verification({"t": lambda *_: "verified"}), approvals=memory_approvals())
    assert guard.after_tool_call(RunState("r"), ToolCall("t", {}),
                                 ToolOutcome("boom", is_error=True)) is None


def test_budget_refusals_reach_the_audit_log() -> None:
    from spanguard.guardrails import Decision, Guard, ModelCall
    from spanguard.guardrails.audit import open_audit_log
    from spanguard.guardrails.errors import GuardrailViolation

    class Refuse(Guard):
        name = "budget"

        def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
            return Decision("deny", "budget", "over budget",
                            error=GuardrailViolation("over budget"))

    enforcer = Enforcer(Policy(), guards=[Refuse()])
    run = enforcer.start_run("r", identity="agent")
    with pytest.raises(GuardrailViolation):
        enforcer.before_model_call(run, ModelCall("gpt"), None)
    [record] = open_audit_log().records()
    assert (record.event, record.actor, record.subject) == ("budget.refused", "agent", "gpt")
    assert record.detail["reason"] == "over budget"
