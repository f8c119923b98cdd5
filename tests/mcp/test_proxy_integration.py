"""The real SDK client against real PyPI servers, direct and through the proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from spanguard.hashing import payload_hash
from spanguard.testing import SpanCapture
from tests.mcp.proxyproc import GUARDED, SERVERS, stored_spans
from tests.mcp.sdk_otel import finished, global_capture

TIME_SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]


@asynccontextmanager
async def session(command: list[str]) -> AsyncIterator[ClientSession]:
    # The SDK passes only a safe subset of the environment by default; the proxy
    # needs SPANGUARD_HOME to find its store.
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        yield client


def wrapped(server: list[str], *options: str, runner: list[str] | None = None) -> list[str]:
    prefix = runner if runner is not None else [sys.executable, "-m", "spanguard"]
    return [*prefix, "mcp", "wrap", *options, "--", *server]


def dump(result: Any) -> dict[str, Any]:
    return result.model_dump(mode="json")  # type: ignore[no-any-return]


async def test_time_server_tools_and_results_are_unchanged_through_the_proxy() -> None:
    async with session(TIME_SERVER) as direct, session(wrapped(TIME_SERVER)) as proxied:
        assert dump(await proxied.list_tools()) == dump(await direct.list_tools())
        args = {"source_timezone": "UTC", "time": "12:30", "target_timezone": "Asia/Tokyo"}
        assert dump(await proxied.call_tool("convert_time", args)) == \
            dump(await direct.call_tool("convert_time", args))
        now_direct = dump(await direct.call_tool("get_current_time", {"timezone": "UTC"}))
        now_proxied = dump(await proxied.call_tool("get_current_time", {"timezone": "UTC"}))
        for result in (now_direct, now_proxied):
            result["structured_content"].pop("datetime")
            result["content"] = [c["text"].split('"datetime"')[0] for c in result["content"]]
        assert now_proxied == now_direct
        bad_tz = {"timezone": "Not/AZone"}
        assert dump(await proxied.call_tool("get_current_time", bad_tz)) == \
            dump(await direct.call_tool("get_current_time", bad_tz))
        errors = []
        for client in (direct, proxied):
            with pytest.raises(MCPError) as caught:
                await client.call_tool("no_such_tool", {})
            errors.append((caught.value.error.code, caught.value.error.message))
        assert errors[0] == errors[1]


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z",
           "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z"}
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=t@example.com",
                        *args], cwd=repo, check=True, env=env, capture_output=True)
    git("init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "first commit")
    (repo / "README.md").write_text("hello\nworld\n")
    return repo


async def test_git_server_tools_and_results_are_unchanged_through_the_proxy(
        git_repo: Path) -> None:
    server = [sys.executable, "-m", "mcp_server_git", "--repository", str(git_repo)]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("git_status", {"repo_path": str(git_repo)}),
        ("git_diff_unstaged", {"repo_path": str(git_repo)}),
        ("git_log", {"repo_path": str(git_repo)}),
        ("git_branch", {"repo_path": str(git_repo), "branch_type": "local"}),
        ("git_show", {"repo_path": str(git_repo), "revision": "HEAD"}),
    ]
    async with session(server) as direct, session(wrapped(server)) as proxied:
        direct_tools = dump(await direct.list_tools())
        assert dump(await proxied.list_tools()) == direct_tools
        listed = {tool["name"] for tool in direct_tools["tools"]}
        assert {name for name, _ in calls} <= listed
        for name, args in calls:
            expected = dump(await direct.call_tool(name, args))
            assert dump(await proxied.call_tool(name, args)) == expected, name
            assert expected["is_error"] is False, (name, expected)


async def test_one_trace_spans_caller_proxy_and_server(cap: SpanCapture,
                                                       spanguard_home: Path) -> None:
    server = [sys.executable, str(SERVERS / "sdk_traced.py")]
    # The SDK's client span goes to the global provider; with one installed (as in
    # an application that traces), it sits between the caller and the proxy.
    sdk_spans = global_capture()
    tracer = cap.tracer_provider.get_tracer("caller")
    async with session(wrapped(server)) as client:
        with tracer.start_as_current_span("execute_tool add") as caller:
            result = await client.call_tool("add", {"a": 2, "b": 3})
    assert result.structured_content == {"result": 5}
    caller_ctx = caller.get_span_context()
    (client_span,) = finished(sdk_spans, "MCP send tools/call add")
    assert client_span.parent is not None
    assert client_span.parent.span_id == caller_ctx.span_id
    spans = stored_spans(spanguard_home)
    proxy_span = next(s for s in spans if s.name == "tools/call add"
                      and s.service_name == "spanguard-mcp-proxy")
    assert proxy_span.trace_id == format(caller_ctx.trace_id, "032x")
    assert proxy_span.parent_span_id == format(client_span.context.span_id, "016x")
    assert proxy_span.kind == "SERVER"
    attrs = proxy_span.attributes
    assert attrs["openinference.span.kind"] == "TOOL"
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "add"
    assert attrs["spanguard.tool.arguments_hash"] == payload_hash({"a": 2, "b": 3})
    assert attrs["mcp.method.name"] == "tools/call"
    assert attrs["mcp.protocol.version"] == "2025-11-25"
    assert attrs["jsonrpc.request.id"] == attrs["gen_ai.tool.call.id"]
    server_span = next(s for s in spans if s.service_name == "sdk-traced-server"
                       and s.attributes.get("mcp.method.name") == "tools/call")
    assert server_span.trace_id == proxy_span.trace_id
    assert server_span.parent_span_id == proxy_span.span_id


async def test_time_server_spans_mark_tool_errors(spanguard_home: Path) -> None:
    async with session(wrapped(TIME_SERVER)) as client:
        failed = await client.call_tool("get_current_time", {"timezone": "Not/AZone"})
        assert failed.is_error
        with pytest.raises(MCPError):
            await client.call_tool("no_such_tool", {})
    spans = stored_spans(spanguard_home)
    tool_error = next(s for s in spans if s.name == "tools/call get_current_time")
    assert tool_error.status == "ERROR"
    assert tool_error.attributes["error.type"] == "tool_error"
    protocol_error = next(s for s in spans if s.name == "tools/call no_such_tool")
    assert protocol_error.attributes["error.type"] == "-32602"
    assert {s.name for s in spans} >= {"initialize", "tools/call get_current_time"}


async def test_a_refusal_reaches_the_sdk_client_as_a_tool_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[test_tools]\ndeny = ["convert_time"]\n')
    command = wrapped(TIME_SERVER, "--policy", str(policy), runner=GUARDED)
    async with session(command) as client:
        refused = await client.call_tool(
            "convert_time",
            {"source_timezone": "UTC", "time": "12:30", "target_timezone": "Asia/Tokyo"})
        allowed = await client.call_tool("get_current_time", {"timezone": "UTC"})
    assert refused.is_error
    assert refused.structured_content is not None
    assert refused.structured_content["spanguard"]["guard"] == "test_tools"
    assert not allowed.is_error
