"""Budgets and tool-loop detection per MCP session, through the proxy, on mcp-server-time."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from tests.mcp.proxyproc import stored_spans

TIME_SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
NOW = "get_current_time"


@asynccontextmanager
async def proxied(tmp_path: Path, policy: str) -> AsyncIterator[ClientSession]:
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "spanguard", "mcp", "wrap", "--policy", str(path), "--", *TIME_SERVER],
        env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        yield client


def refusal(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error and result.structured_content is not None
    described: dict[str, Any] = result.structured_content["spanguard"]
    return described


def usage(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {"spanguard/usage": {"input_tokens": tokens_in, "output_tokens": tokens_out,
                                "model": "gpt-test"}}


async def test_tool_calls_per_session_are_capped(tmp_path: Path) -> None:
    async with proxied(tmp_path, "[loop_budget]\nmax_tool_calls = 2\n") as client:
        assert not (await client.call_tool(NOW, {"timezone": "UTC"})).is_error
        assert not (await client.call_tool(NOW, {"timezone": "Asia/Tokyo"})).is_error
        third = refusal(await client.call_tool(NOW, {"timezone": "Europe/Paris"}))
    assert third["guard"] == "loop_budget"
    assert third["error_type"] == "loop_budget_exceeded"
    assert "tool_calls" in third["reason"]


async def test_a_repeated_identical_tool_call_is_stopped(tmp_path: Path,
                                                         spanguard_home: Path) -> None:
    async with proxied(tmp_path, "[tool_loop]\nidentical_calls = 3\n") as client:
        for _ in range(2):
            assert not (await client.call_tool(NOW, {"timezone": "UTC"})).is_error
        assert not (await client.call_tool(NOW, {"timezone": "Asia/Tokyo"})).is_error
        looped = refusal(await client.call_tool(NOW, {"timezone": "UTC"}))
    assert looped["error_type"] == "tool_loop_detected"
    assert "3 times" in looped["reason"]
    guardrail = next(s for s in stored_spans(spanguard_home) if s.name == "guardrail tool_loop")
    assert guardrail.attributes["spanguard.tool_loop.count"] == 3


async def test_token_usage_sent_in_meta_is_charged_to_the_session_budget(
        tmp_path: Path, spanguard_home: Path) -> None:
    policy = "[loop_budget]\nmax_input_tokens = 1000\n"
    async with proxied(tmp_path, policy) as client:
        for _ in range(2):
            result = await client.call_tool(NOW, {"timezone": "UTC"}, meta=usage(400, 20))
            assert not result.is_error
        # Calls that report nothing are not charged tokens.
        assert not (await client.call_tool(NOW, {"timezone": "UTC"})).is_error
        over = refusal(await client.call_tool(NOW, {"timezone": "UTC"}, meta=usage(400, 20)))
    assert over["error_type"] == "loop_budget_exceeded"
    assert "input_tokens" in over["reason"] and "1,000" in over["reason"]
    spans = stored_spans(spanguard_home)
    denied = next(s for s in spans if s.name == "guardrail loop_budget"
                  and s.attributes.get("spanguard.guardrail.decision") == "deny")
    assert denied.attributes["spanguard.guardrail.spend"] == 800
    assert denied.attributes["spanguard.guardrail.limit"] == 1000


async def test_window_budgets_apply_across_the_mcp_hop(tmp_path: Path) -> None:
    policy = ('[window_budgets.hourly]\nscope = "session"\nwindow = "hour"\n'
              "max_total_tokens = 900\n")
    async with proxied(tmp_path, policy) as client:
        assert not (await client.call_tool(NOW, {"timezone": "UTC"},
                                           meta=usage(300, 100))).is_error
        over = refusal(await client.call_tool(NOW, {"timezone": "UTC"},
                                              meta=usage(500, 100)))
    assert over["error_type"] == "window_budget_exceeded"
