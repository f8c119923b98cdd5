"""The shared MCP result builders the middleware, the proxy and holds reuse."""

from __future__ import annotations

from spanguard.guardrails import Decision, GuardrailViolation
from spanguard.mcp_bridge import ToolAnnotations, apply_decisions, refusal_result
from spanguard.mcp_bridge.guard import DECISIONS_META_KEY


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
    reported = apply_decisions(result, [Decision("report", "verify", "unknown")])
    assert reported["isError"] is False
    assert reported["_meta"][DECISIONS_META_KEY] == [
        {"guard": "verify", "decision": "report", "reason": "unknown"}]
    failed = apply_decisions(result, [Decision("deny", "verify", "not found on read-back")])
    assert failed["isError"] is True
    assert failed["content"][0]["text"] == "done"
    assert "not found on read-back" in failed["content"][-1]["text"]
    assert result["isError"] is False  # the input is not modified


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
