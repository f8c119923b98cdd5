"""Every wait has its own deadline, and no request waits behind another.

A silent upstream used to block the whole session for 30 s on every call when a
policy was active: the proxy listed the tools inline, in the pump, and again on
the next call. Now a call that needs the listing waits in its own task (other
requests go on), the listing has ``--upstream-timeout``, a failed listing is not
repeated per call, a read-back has the same deadline, and ``--call-timeout``
bounds each forwarded request.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from spanguard.cli._common import EXIT_CONFIG
from spanguard.errors import ConfigError
from spanguard.mcp_bridge import McpProxy
from tests.conftest import free_port
from tests.mcp.proxyproc import (
    RECORDER,
    SPANGUARD,
    SPEC,
    RawProxy,
    executed,
    recorded,
    stored_spans,
)

REQUEST_TIMEOUT = -32001


def policy(tmp_path: Path, body: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    return str(path)


async def test_a_silent_upstream_holds_up_only_the_call_that_needs_its_tool_list(
        tmp_path: Path) -> None:
    log = tmp_path / "executed.log"
    proxy = await RawProxy.start([*SPEC, str(log), "--silent-list"], "--policy",
                                 policy(tmp_path, '[holds]\ntools = ["wipe"]\n'),
                                 "--upstream-timeout", "2")
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"n": 1}}})
    await proxy.send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert await proxy.recv() == {"jsonrpc": "2.0", "id": 2, "result": {}}  # not behind 1
    assert (await proxy.recv())["id"] == 1  # once the listing gave up
    for n in range(3, 6):
        assert (await proxy.call(n, "echo", n=n))["result"]["isError"] is False
    held = await proxy.call(6, "wipe")
    assert held["result"]["structuredContent"]["spanguard_hold"]["status"] == "held"
    assert await proxy.close() == 0
    listings = [e for e in executed(log) if e["method"] == "tools/list"]
    assert len(listings) == 1  # not again on every call
    assert [e["id"] for e in executed(log) if e["tool"] == "echo"] == [1, 3, 4, 5]


async def test_a_read_back_that_never_returns_is_unknown_and_blocks_nothing(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "executed.log"
    verify = '[verify.nest]\ncall = "stall"\nexpect_contains = "x"\n'
    proxy = await RawProxy.start([*SPEC, str(log)], "--policy", policy(tmp_path, verify),
                                 "--upstream-timeout", "1")
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "nest", "arguments": {"depth": 1}}})
    assert (await proxy.call(2, "echo"))["id"] == 2  # answered while 1 waits
    unconfirmed = (await proxy.response(1))["result"]
    assert unconfirmed["isError"] is True
    assert unconfirmed["_meta"]["spanguard/guardrail"]["verification"]["status"] == "unknown"
    assert await proxy.close() == 0
    span = next(s for s in stored_spans(spanguard_home) if s.name == "tools/call nest"
                and s.kind == "SERVER")
    assert span.attributes["verification.status"] == "unknown"


async def test_call_timeout_answers_the_client_and_cancels_the_request_upstream(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    proxy = await RawProxy.start([*RECORDER, str(log)], "--call-timeout", "0.5")
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "slow", "arguments": {}}})
    assert (await proxy.call(2, "echo"))["result"]["isError"] is False
    timed_out = await proxy.response(1)
    assert timed_out["error"]["code"] == REQUEST_TIMEOUT
    assert "did not answer tools/call 'slow' (request 1) within 0.5 s" in \
        timed_out["error"]["message"]
    assert (await proxy.request(3, "ping"))["result"] == {}
    assert await proxy.close() == 0
    cancels = [m for m in recorded(log) if m.get("method") == "notifications/cancelled"]
    assert [c["params"]["requestId"] for c in cancels] == [1]
    span = next(s for s in stored_spans(spanguard_home) if s.name == "tools/call slow")
    assert span.attributes["spanguard.mcp.proxy_outcome"] == "timeout"
    assert span.attributes["error.type"] == "timeout"


@pytest.mark.parametrize(("options", "message"), [
    (["--upstream-timeout", "0"], "--upstream-timeout must be more than 0 seconds"),
    (["--call-timeout", "-1"], "--call-timeout must be more than 0 seconds"),
    (["--name", " "], "--name must not be empty"),
])
def test_bad_deadlines_and_names_are_refused_before_anything_starts(
        options: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run([*SPANGUARD, "mcp", "wrap", *options, "--", *SPEC,
                           str(tmp_path / "log")], capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG
    assert message in done.stderr
    assert not (tmp_path / "log").exists()


def test_the_embedding_api_refuses_them_too() -> None:
    for bad in ({"upstream_timeout": 0}, {"call_timeout": 0.0}, {"server_name": ""}):
        with pytest.raises(ConfigError):
            McpProxy(SPEC, **bad)  # type: ignore[arg-type]


async def test_a_hold_wait_whose_store_goes_away_is_answered_and_never_runs(
        tmp_path: Path) -> None:
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                              str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                        timeout=0.2):
                break
            await asyncio.sleep(0.05)
        log = tmp_path / "executed.log"
        store = f"redis://127.0.0.1:{port}/0"
        proxy = await RawProxy.start(
            [*SPEC, str(log)], "--policy",
            policy(tmp_path, f'[store]\nurl = "{store}"\n[holds]\ntools = ["wipe"]\n'),
            "--hold-wait", "30")
        await proxy.initialize()
        await proxy.request("list", "tools/list")  # so the call is judged in order
        await proxy.send({"jsonrpc": "2.0", "id": "w", "method": "tools/call",
                          "params": {"name": "wipe", "arguments": {}}})
        assert (await proxy.request(1, "ping"))["result"] == {}  # the call now waits
        redis.kill()
        redis.wait(timeout=10)
        failed = await proxy.response("w")
        assert failed["error"]["code"] == -32603
        assert "the request was not forwarded" in failed["error"]["message"]
        assert (await proxy.request(2, "ping"))["result"] == {}
        assert await proxy.close() == 0
        assert executed(log) == []
    finally:
        redis.kill()
        redis.wait(timeout=10)
