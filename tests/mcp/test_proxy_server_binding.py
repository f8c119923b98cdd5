"""Approvals are bound to the wrapped server: ``--name``, else a hash of its command line.

Two proxies share one home, one policy and one maker, as two wrapped servers in
one client config do; only the server differs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from spanguard.guardrails import approve, get_hold
from tests.mcp.proxyproc import SPANGUARD, SPEC, RawProxy, executed


async def wrapped(tmp_path: Path, log: Path, *names: str) -> RawProxy:
    policy = tmp_path / "policy.toml"
    policy.write_text('[holds]\ntools = ["wipe"]\n')
    proxy = await RawProxy.start([*SPEC, str(log)], "--policy", str(policy),
                                 "--identity", "alice", *names)
    await proxy.initialize()
    return proxy


def hold_of(answer: dict[str, object]) -> dict[str, str]:
    result = answer["result"]
    assert isinstance(result, dict)
    hold: dict[str, str] = result["structuredContent"]["spanguard_hold"]
    return hold


async def test_an_approval_given_for_staging_does_not_run_on_prod(tmp_path: Path) -> None:
    staging_log, prod_log = tmp_path / "staging.log", tmp_path / "prod.log"
    staging = await wrapped(tmp_path, staging_log, "--name", "staging")
    prod = await wrapped(tmp_path, prod_log, "--name", "prod")

    asked = hold_of(await staging.call(1, "wipe", db="main"))
    assert asked["server"] == "staging"
    record = get_hold(asked["hold_id"])
    assert record.server == "staging"
    assert "asks to run wipe on server staging" in record.summary  # what the checker reads
    approve(asked["hold_id"], "bob")

    on_prod = hold_of(await prod.call(1, "wipe", db="main"))
    assert on_prod["status"] == "held" and on_prod["hold_id"] != asked["hold_id"]
    assert get_hold(asked["hold_id"]).status == "approved"
    ran = await staging.call(2, "wipe", db="main")
    assert ran["result"]["isError"] is False
    assert await staging.close() == 0 and await prod.close() == 0
    assert [e["arguments"] for e in executed(staging_log)] == [{"db": "main"}]
    assert executed(prod_log) == []

    shown = subprocess.run([*SPANGUARD, "holds", "show", asked["hold_id"]],
                           capture_output=True, text=True, check=True).stdout
    assert re.search(r"^server:\s+staging$", shown, re.MULTILINE)


async def test_without_a_name_each_command_line_is_its_own_server(tmp_path: Path) -> None:
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    first = await wrapped(tmp_path, log_a)
    asked = hold_of(await first.call(1, "wipe", db="main"))
    assert re.fullmatch(r"cmd:[0-9a-f]{16}", asked["server"])
    assert str(log_a) not in get_hold(asked["hold_id"]).summary  # no arguments leak
    approve(asked["hold_id"], "bob")
    assert await first.close() == 0

    other = await wrapped(tmp_path, log_b)  # another command line: another server
    elsewhere = hold_of(await other.call(1, "wipe", db="main"))
    assert elsewhere["hold_id"] != asked["hold_id"]
    assert elsewhere["server"] != asked["server"]
    assert await other.close() == 0

    again = await wrapped(tmp_path, log_a)  # the same command line: the same server
    ran = await again.call(1, "wipe", db="main")
    assert ran["result"]["isError"] is False
    assert await again.close() == 0
    assert len(executed(log_a)) == 1 and executed(log_b) == []
