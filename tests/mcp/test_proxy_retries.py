"""Tool calls across an upstream crash: repeated only when the tool says that is safe."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.mcp.proxyproc import SERVERS, RawProxy, stored_spans

FLAKY = [sys.executable, str(SERVERS / "flaky.py")]


def _calls(state: Path) -> list[str]:
    return (state / "calls").read_text().split()


async def _proxy(tmp_path: Path, *options: str, extra: str = "") -> tuple[RawProxy, Path]:
    state = tmp_path / "state"
    state.mkdir()
    policy = tmp_path / "policy.toml"
    policy.write_text("[retry]\ninitial_wait = 0.05\nmax_wait = 0.2\n" + extra)
    proxy = await RawProxy.start([*FLAKY, str(state)], "--policy", str(policy), *options)
    await proxy.initialize()
    return proxy, state


@pytest.mark.parametrize("tool", ["lookup", "put"])
async def test_a_repeatable_tool_call_is_retried_after_the_upstream_restarts(
        tool: str, tmp_path: Path, spanguard_home: Path) -> None:
    proxy, state = await _proxy(tmp_path, "--restart-on-crash")
    answered = await proxy.call(1, tool, key="k")
    assert answered["result"]["content"][0]["text"] == f"{tool} done"
    assert (await proxy.call(2, tool, key="k2"))["result"]["isError"] is False
    assert await proxy.close() == 0
    assert _calls(state) == [tool, tool, tool]  # crashed once, re-sent once, then the 2nd
    span = min((s for s in stored_spans(spanguard_home) if s.name == f"tools/call {tool}"),
               key=lambda s: s.start_time)
    assert span.status != "ERROR"
    assert span.attributes["spanguard.attempt"] == 2
    (retry,) = [e for e in span.events if e["name"] == "spanguard.tool.retry"]
    assert retry["attributes"]["spanguard.attempt"] == 1
    assert "exited with code 9" in retry["attributes"]["spanguard.retry.reason"]


async def test_a_non_idempotent_tool_call_is_never_retried_and_says_why(
        tmp_path: Path, spanguard_home: Path) -> None:
    proxy, state = await _proxy(tmp_path, "--restart-on-crash")
    failed = await proxy.call(1, "append", line="x")
    message = failed["error"]["message"]
    assert failed["error"]["code"] == -32000
    assert "not retried: tool is neither readOnlyHint nor idempotentHint" in message
    assert "may or may not have taken effect" in message
    # The server was restarted for the session: the next call works, once.
    assert (await proxy.call(2, "append", line="y"))["result"]["isError"] is False
    assert await proxy.close() == 0
    assert _calls(state) == ["append", "append"]
    span = min((s for s in stored_spans(spanguard_home) if s.name == "tools/call append"),
               key=lambda s: s.start_time)
    assert span.status == "ERROR"
    assert span.attributes["spanguard.mcp.proxy_outcome"] == "upstream_exit"


async def test_without_restart_a_repeatable_call_fails_once_and_names_the_flag(
        tmp_path: Path) -> None:
    # A guard makes the proxy read the tools' annotations even without --restart-on-crash.
    proxy, state = await _proxy(tmp_path, extra="[tool_loop]\nidentical_calls = 5\n")
    failed = await proxy.call(1, "lookup", key="k")
    assert "not retried: the proxy restarts the server only with --restart-on-crash" in \
        failed["error"]["message"]
    assert await proxy.exited() == 1
    assert _calls(state) == ["lookup"]
