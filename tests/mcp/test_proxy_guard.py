"""The guardrail hook on tools/call: refusals answered by the proxy, annotations used."""

from __future__ import annotations

import json
from pathlib import Path

from tests.mcp.proxyproc import GUARDED, RECORDER, RawProxy, recorded, stored_spans


def _policy(tmp_path: Path, body: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    return str(path)


async def test_a_refused_call_is_answered_by_the_proxy_and_never_forwarded(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, '[test_tools]\ndeny = ["wipe"]\n')
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy,
                                 "--identity", "alice", runner=GUARDED)
    await proxy.initialize()
    refused = await proxy.call(1, "wipe", path="/")
    result = refused["result"]
    assert result["isError"] is True
    assert "wipe is not allowed for alice" in result["content"][0]["text"]
    assert result["structuredContent"]["spanguard"] == {
        "tool": "wipe", "guard": "test_tools", "error_type": "test_refusal",
        "reason": "wipe is not allowed for alice (call 1)"}
    allowed = await proxy.call(2, "echo", q=1)
    assert allowed["result"]["isError"] is False
    assert await proxy.close() == 0
    calls = [m["params"]["name"] for m in recorded(log) if m.get("method") == "tools/call"]
    assert calls == ["echo"]
    spans = stored_spans(spanguard_home)
    wipe = next(s for s in spans if s.name == "tools/call wipe")
    assert wipe.status == "ERROR"
    assert wipe.attributes["error.type"] == "test_refusal"
    assert wipe.attributes["gen_ai.tool.name"] == "wipe"
    guardrail = next(s for s in spans if s.name == "guardrail test_tools")
    assert guardrail.parent_span_id == wipe.span_id
    echo = next(s for s in spans if s.name == "tools/call echo")
    assert echo.status != "ERROR"
    assert [e["name"] for e in echo.events] == ["guardrail test_tools"]


async def test_annotations_are_fetched_when_the_client_never_listed_tools(
        tmp_path: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, "[test_tools]\nrefuse_destructive = true\n")
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy, runner=GUARDED)
    await proxy.initialize()
    # No tools/list from the client: the proxy lists the tools itself to see the hints.
    refused = await proxy.call(1, "wipe")
    assert refused["result"]["isError"] is True
    assert (await proxy.call(2, "echo"))["result"]["isError"] is False
    await proxy.close()
    frames = recorded(log)
    own = [m for m in frames if m.get("method") == "tools/list"]
    assert len(own) == 1
    assert str(own[0]["id"]).startswith("spanguard-proxy-")
    assert [m["params"]["name"] for m in frames if m.get("method") == "tools/call"] == ["echo"]


async def test_annotations_from_the_clients_tools_list_drive_the_policy(tmp_path: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, "[test_tools]\nrefuse_destructive = true\n")
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy, runner=GUARDED)
    await proxy.initialize()
    listed = await proxy.request(1, "tools/list", {})
    assert {t["name"] for t in listed["result"]["tools"]} >= {"echo", "wipe"}
    assert (await proxy.call(2, "wipe"))["result"]["isError"] is True
    await proxy.close()
    assert [m["id"] for m in recorded(log) if m.get("method") == "tools/list"] == [1]


async def test_a_failed_post_call_check_is_never_reported_as_success(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, '[test_tools]\nfail_after = ["echo"]\n')
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy, runner=GUARDED)
    await proxy.initialize()
    result = (await proxy.call(1, "echo", q=7))["result"]
    assert result["isError"] is True
    original = json.loads(result["content"][0]["text"])
    assert original["arguments"] == {"q": 7}
    assert "post-call check failed (test_tools: state not verified)" in \
        result["content"][1]["text"]
    await proxy.close()
    span = next(s for s in stored_spans(spanguard_home) if s.name == "tools/call echo")
    assert span.status == "ERROR"
