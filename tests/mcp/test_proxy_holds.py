"""Holds and verification through ``spanguard mcp wrap`` (real CLI, real hold store).

The recorder server logs every frame it reads, so "never executed" is checked
on what reached the server, not on what the proxy says.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from spanguard.guardrails import approve, get_hold, list_holds, reject
from tests.mcp.proxyproc import RECORDER, RawProxy, recorded, stored_spans


def _policy(tmp_path: Path, body: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    return str(path)


def _executed(log: Path, tool: str) -> int:
    return sum(1 for m in recorded(log) if m.get("method") == "tools/call"
               and m["params"]["name"] == tool and not str(m["id"]).startswith("spanguard-"))


async def test_a_rejected_call_is_reported_and_never_executed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, "[holds]\nhigh_risk = true\n")
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy,
                                 "--identity", "alice")
    await proxy.initialize()
    held = (await proxy.call(1, "wipe", path="/data"))["result"]
    hold = held["structuredContent"]["spanguard_hold"]
    assert held["isError"] is True and hold["status"] == "held"
    assert hold["approve_command"] == f"spanguard holds approve {hold['hold_id']} --as NAME"
    # Annotations decide: echo is readOnlyHint, so it is not high risk.
    assert (await proxy.call(2, "echo", q=1))["result"]["isError"] is False
    reject(hold["hold_id"], "carol", "not on a Friday")
    # Re-made after the rejection: a new request, and the old one's fate is reported.
    again = (await proxy.call(3, "wipe", path="/data"))["result"]
    assert again["isError"] is True
    renewed = again["structuredContent"]["spanguard_hold"]
    assert renewed["status"] == "held" and renewed["hold_id"] != hold["hold_id"]
    assert renewed["previous"] == {"hold_id": hold["hold_id"], "status": "rejected",
                                   "checker": "carol", "decision_reason": "not on a Friday"}
    assert "was rejected by carol: not on a Friday" in again["content"][0]["text"]
    assert await proxy.close() == 0
    assert _executed(log, "wipe") == 0


async def test_approval_executes_the_same_payload_once_and_not_another(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, '[holds]\ntools = ["wipe"]\n')
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy,
                                 "--identity", "alice")
    await proxy.initialize()
    hold_id = (await proxy.call(1, "wipe", path="/a"))["result"]["structuredContent"][
        "spanguard_hold"]["hold_id"]
    approve(hold_id, "bob")
    other = (await proxy.call(2, "wipe", path="/b"))["result"]
    assert other["structuredContent"]["spanguard_hold"]["hold_id"] != hold_id
    ran = (await proxy.call(3, "wipe", path="/a"))["result"]
    assert ran["isError"] is False and '"path": "/a"' in ran["content"][0]["text"]
    assert get_hold(hold_id).status == "executed"
    await proxy.close()
    forwarded = [m["params"]["arguments"] for m in recorded(log)
                 if m.get("method") == "tools/call" and m["params"]["name"] == "wipe"]
    assert forwarded == [{"path": "/a"}]


async def test_hold_wait_blocks_the_held_call_but_not_the_session(tmp_path: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, '[holds]\ntools = ["wipe"]\n')
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy,
                                 "--identity", "alice", "--hold-wait", "30")
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "wipe", "arguments": {"path": "/x"}}})
    # The session keeps working while the held call waits for its checker.
    assert (await proxy.call(2, "echo", q=2))["result"]["isError"] is False
    (pending,) = list_holds("pending")
    assert _executed(log, "wipe") == 0
    approve(pending.id, "bob")
    answered = await proxy.response(1)
    assert answered["result"]["isError"] is False
    assert get_hold(pending.id).status == "executed"
    await proxy.close()
    assert _executed(log, "wipe") == 1


async def test_hold_wait_reports_a_rejection_to_the_waiting_call(tmp_path: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, '[holds]\ntools = ["wipe"]\n')
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy,
                                 "--identity", "alice", "--hold-wait", "30")
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "wipe", "arguments": {"path": "/x"}}})
    assert (await proxy.call(2, "echo"))["result"]["isError"] is False
    (pending,) = list_holds("pending")
    reject(pending.id, "bob", "no")
    answered = (await proxy.response(1))["result"]
    assert answered["isError"] is True
    assert answered["structuredContent"]["spanguard_hold"]["status"] == "rejected"
    assert answered["structuredContent"]["spanguard_hold"]["hold_id"] == pending.id
    assert len(list_holds()) == 1  # no new request was made for the waiting call
    await proxy.close()
    assert _executed(log, "wipe") == 0


async def test_hold_wait_times_out_as_held_and_a_cancelled_wait_never_runs(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, '[holds]\ntools = ["wipe", "pid"]\n')
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy,
                                 "--identity", "alice", "--hold-wait", "0.3")
    await proxy.initialize()
    timed_out = (await proxy.call(1, "wipe", path="/x"))["result"]
    assert timed_out["structuredContent"]["spanguard_hold"]["status"] == "held"
    await proxy.close()

    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy,
                                 "--identity", "alice", "--hold-wait", "30")
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "pid", "arguments": {}}})
    assert (await proxy.call(8, "echo"))["result"]["isError"] is False
    await proxy.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": 7}})
    assert (await proxy.call(9, "echo"))["result"]["isError"] is False
    (pending,) = [h for h in list_holds("pending") if h.tool == "pid"]
    approve(pending.id, "bob")
    await asyncio.sleep(0.5)  # a wait that was not cancelled would poll and run it now
    assert await proxy.close() == 0
    assert _executed(log, "pid") == 0
    span = next(s for s in stored_spans(spanguard_home) if s.name == "tools/call pid")
    assert span.attributes["spanguard.mcp.proxy_outcome"] == "cancelled"


async def test_unconfirmed_action_is_reported_not_confirmed_and_holds_the_tool(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, """
[verify]
hold_on_failure = true
[verify.wipe]
call = "echo"
arguments = { q = "{path}" }
expect_contains = "gone: {path}"
""")
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy,
                                 "--identity", "alice")
    await proxy.initialize()
    result = (await proxy.call(1, "wipe", path="/data"))["result"]
    assert result["isError"] is True
    assert '"path": "/data"' in result["content"][0]["text"]  # the server's content is kept
    assert result["content"][1]["text"].startswith("spanguard: not confirmed (verify: ")
    assert result["_meta"]["spanguard/guardrail"]["verification"]["status"] == "failed"
    # hold_on_failure: the next call of the unverified tool waits for a checker.
    again = (await proxy.call(2, "wipe", path="/other"))["result"]
    assert again["structuredContent"]["spanguard_hold"]["status"] == "held"
    assert "not verified" in again["content"][0]["text"]
    await proxy.close()
    assert _executed(log, "wipe") == 1
    read_backs = [m for m in recorded(log) if str(m.get("id")).startswith("spanguard-proxy-")
                  and m.get("method") == "tools/call"]
    assert [m["params"]["name"] for m in read_backs] == ["echo"]
    assert read_backs[0]["params"]["arguments"] == {"q": "/data"}
    spans = stored_spans(spanguard_home)
    wipe = min((s for s in spans if s.name == "tools/call wipe"), key=lambda s: s.start_time)
    assert wipe.attributes["spanguard.verification.status"] == "failed"
    assert wipe.attributes["error.type"] == "unverified_action"
    assert wipe.status == "ERROR"
    read_back = next(s for s in spans if s.name == "tools/call echo" and s.kind == "CLIENT")
    assert read_back.parent_span_id == wipe.span_id


async def test_tools_without_a_verifier_are_never_called_verified(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    policy = _policy(tmp_path, '[verify.wipe]\ncall = "echo"\n')
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", policy)
    await proxy.initialize()
    plain = await proxy.call(1, "echo", q=1)
    assert "_meta" not in plain["result"]
    verified = (await proxy.call(2, "wipe", path="/p"))["result"]
    assert verified["isError"] is False
    assert verified["_meta"]["spanguard/guardrail"]["verification"]["status"] == "verified"
    await proxy.close()
    spans = {s.name: s for s in stored_spans(spanguard_home) if s.kind == "SERVER"}
    assert "spanguard.verification.status" not in spans["tools/call echo"].attributes
    assert spans["tools/call wipe"].attributes["spanguard.verification.status"] == "verified"
