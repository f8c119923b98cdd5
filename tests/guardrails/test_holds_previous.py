"""A caller without call ids (MCP) re-making a rejected call learns of the rejection."""

from __future__ import annotations

from spanguard.guardrails import HoldPending, HoldRules, ToolCall
from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.holds import HoldGuard, hold_result_payload

WIPE = ToolCall("wipe", {"path": "/data"}, annotations={})


def test_a_new_request_reports_the_rejection_of_the_previous_one() -> None:
    approvals = Approvals.open("memory://")
    guard = HoldGuard(HoldRules(tools=("wipe",)), approvals=approvals)
    first = guard.check(WIPE, maker="alice")
    assert first is not None and isinstance(first.error, HoldPending)
    assert first.error.previous is None
    approvals.reject(first.error.hold_id, "carol", "wrong disk")
    again = guard.check(WIPE, maker="alice")
    assert again is not None and again.kind == "hold"
    assert isinstance(again.error, HoldPending)
    assert again.error.hold_id != first.error.hold_id
    assert "was rejected by carol: wrong disk" in str(again.error)
    assert hold_result_payload(again.error)["structuredContent"]["spanguard_hold"][
        "previous"] == {"hold_id": first.error.hold_id, "status": "rejected",
                        "checker": "carol", "decision_reason": "wrong disk"}
    # Another maker's rejected call is not this maker's history.
    other = guard.check(WIPE, maker="bob")
    assert other is not None and isinstance(other.error, HoldPending)
    assert other.error.previous is None
