"""The shared MCP result builders the middleware, the proxy and holds reuse."""

from __future__ import annotations

from spanguard import semconv as sc
from spanguard.guardrails import Decision, GuardrailViolation
from spanguard.mcp_bridge import ToolAnnotations, apply_decisions, refusal_result
from spanguard.mcp_bridge.guard import GUARDRAIL_META_KEY


class HoldPending(GuardrailViolation):
    guard = "holds"
    error_type = "hold_pending"


def test_refusal_result_wire_form_for_raw_json_peers() -> None:
    wire = refusal_result(HoldPending("needs approval"), "wire_money",
                          details={"hold_id": "h-1"}).model_dump(
        by_alias=True, mode="json", exclude_none=True)
    assert wire["isError"] is True
    assert wire["structuredContent"]["spanguard"] == {
        "tool": "wire_money", "guard": "holds", "error_type": "hold_pending",
        "reason": "needs approval", "hold_id": "h-1"}
    assert "needs approval" in wire["content"][0]["text"]


def test_apply_decisions_annotates_reports_and_escalates_denials() -> None:
    result = {"content": [{"type": "text", "text": "done"}], "isError": False}
    assert apply_decisions(result, [Decision("allow", "budget")]) == result
    reported = apply_decisions(result, [Decision("report", "audit", "noted")])
    assert reported["isError"] is False
    assert reported["_meta"][GUARDRAIL_META_KEY] == {"decisions": [
        {"guard": "audit", "decision": "report", "reason": "noted"}]}
    failed = apply_decisions(result, [Decision("deny", "verify", "not found on read-back")])
    assert failed["isError"] is True
    assert failed["content"][0]["text"] == "done"
    assert "not found on read-back" in failed["content"][-1]["text"]
    assert result["isError"] is False  # the input is not modified


def test_a_verification_without_a_verified_status_is_never_a_success() -> None:
    result = {"content": [{"type": "text", "text": "done"}], "isError": False}
    unknown = apply_decisions(result, [Decision("report", "verify", "no status recorded")])
    assert unknown["isError"] is True
    assert unknown["_meta"][GUARDRAIL_META_KEY] == {
        "verification": {"status": "unknown", "detail": "no status recorded"}}
    assert unknown["content"][-1]["text"] == \
        "spanguard: not confirmed (verify: no status recorded)"
    verified = apply_decisions(result, [Decision(
        "report", "verify", "read-back shows it", {sc.VERIFICATION_STATUS: "verified"})])
    assert verified["isError"] is False and verified["content"] == result["content"]
    assert verified["_meta"][GUARDRAIL_META_KEY]["verification"]["status"] == "verified"


def test_tool_annotations_learn_from_wire_listings_and_skip_junk() -> None:
    tools = ToolAnnotations()
    tools.observe({"tools": [
        {"name": "rm", "annotations": {"destructiveHint": True}},
        {"name": "ls"},
        {"annotations": {"readOnlyHint": True}},
        "junk",
    ]})
    tools.observe({"tools": "not a list"})
    assert tools.get("rm") == {"destructiveHint": True}
    assert tools.get("ls") == {}
    assert tools.get("cat") is None
