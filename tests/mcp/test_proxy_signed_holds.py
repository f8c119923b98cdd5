"""Signed approvals through ``spanguard mcp wrap``: ``--hold-wait`` and a re-made call.

The proxy reads the reviewers from its policy and proves each approval before it
forwards anything; the recorder server logs every frame it reads, so "never
executed" is checked on what reached the server.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from spanguard.guardrails import approve, get_hold, list_holds
from spanguard.guardrails.audit import open_audit_log
from spanguard.guardrails.audit_check import AuditTrust, check_log
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.signing import Signer
from tests.mcp.proxyproc import RECORDER, RawProxy, recorded

MARIA = Signer.generate()


def _policy(tmp_path: Path) -> tuple[str, Policy]:
    path = tmp_path / "policy.toml"
    path.write_text(f'[holds]\ntools = ["wipe"]\n'
                    f'[holds.reviewers.maria]\nkey = "{MARIA.public}"\n')
    return str(path), Policy.from_file(path)


def _executed(log: Path, tool: str) -> int:
    return sum(1 for m in recorded(log) if m.get("method") == "tools/call"
               and m["params"]["name"] == tool)


async def test_hold_wait_runs_a_signed_approval_and_refuses_an_unsigned_one(
        tmp_path: Path) -> None:
    log = tmp_path / "log"
    path, policy = _policy(tmp_path)
    assert policy.holds is not None
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", path,
                                 "--identity", "alice", "--hold-wait", "30")
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "wipe", "arguments": {"path": "/x"}}})
    assert (await proxy.call(2, "echo"))["result"]["isError"] is False
    (first,) = list_holds("pending")
    approve(first.id, "bob")  # unsigned: development mode, not this policy
    refused = (await proxy.response(1))["result"]
    assert refused["isError"] is True
    assert refused["structuredContent"]["spanguard_hold"]["status"] == "void"
    assert "not signed" in refused["content"][0]["text"]
    assert get_hold(first.id).status == "void"

    await proxy.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "wipe", "arguments": {"path": "/x"}}})
    assert (await proxy.call(4, "echo"))["result"]["isError"] is False
    (second,) = list_holds("pending")
    approve(second.id, "maria", signer=MARIA, reviewers=policy.holds.reviewers)
    ran = (await proxy.response(3))["result"]
    assert ran["isError"] is False
    assert get_hold(second.id).status == "executed"
    assert await proxy.close() == 0
    assert _executed(log, "wipe") == 1
    check = check_log(open_audit_log().records(), AuditTrust.of(policy))
    assert check.ok, check.reason


async def test_a_remade_call_on_a_forged_row_is_refused_and_never_reaches_the_server(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    path, _ = _policy(tmp_path)
    proxy = await RawProxy.start([*RECORDER, str(log)], "--policy", path,
                                 "--identity", "alice")
    await proxy.initialize()
    held = (await proxy.call(1, "wipe", path="/data"))["result"]
    hold_id = held["structuredContent"]["spanguard_hold"]["hold_id"]
    db = sqlite3.connect(spanguard_home / "guardrails.db")
    (raw,) = db.execute("SELECT record FROM holds WHERE id = ?", (hold_id,)).fetchone()
    forged = {**json.loads(raw), "status": "approved", "checker": "cfo"}
    db.execute("UPDATE holds SET status = 'approved', record = ? WHERE id = ?",
               (json.dumps(forged), hold_id))
    db.commit()
    db.close()
    again = (await proxy.call(2, "wipe", path="/data"))["result"]
    assert again["isError"] is True
    hold = again["structuredContent"]["spanguard_hold"]
    assert hold["hold_id"] == hold_id and hold["status"] == "void"
    assert "refused by the executing side" in again["content"][0]["text"]
    assert await proxy.close() == 0
    assert _executed(log, "wipe") == 0
    [void] = [r for r in open_audit_log().records() if r.event == "hold.void"]
    assert void.subject == hold_id and "not signed" in void.detail["reason"]
