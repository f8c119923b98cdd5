"""mcp 2.x: a LangGraph agent whose tool calls the SDK's client, through ``spanguard mcp
wrap``, in an environment with only ``spanguard[mcp,langgraph]`` and a 2.x server.

langchain-mcp-adapters does not support mcp 2.x yet (its releases pin ``mcp<2``), so
the tool here is the SDK's ``ClientSession`` in a LangChain tool; the SDK injects the
trace context itself and :func:`propagate_requests` adds the run's correlation ids.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from langchain_core.tools import tool
from mcp import ClientSession, StdioServerParameters, stdio_client

from spanguard.mcp_bridge import _protocol as protocol
from spanguard.mcp_bridge.client import propagate_requests
from tests.compat.inside.agent import (
    TOOL,
    assert_one_trace,
    configure,
    run_agent,
    server_env,
    text_of,
    wrap_command,
)


def test_the_installed_sdk_is_2x() -> None:
    assert metadata.version("mcp").startswith("2."), metadata.version("mcp")


async def test_langgraph_agent_through_sdk_client_and_wrap_is_one_trace(tmp_path: Path) -> None:
    home = tmp_path / "home"
    handle = configure(home)
    command = wrap_command()
    server = StdioServerParameters(command=command[0], args=command[1:], env=server_env(home))
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        @tool(TOOL)
        async def get_current_time(timezone: str) -> str:
            """The current time in an IANA timezone."""
            with propagate_requests():
                return text_of(await session.call_tool(TOOL, {"timezone": timezone}))

        answer = await run_agent(handle, [get_current_time])
    handle.shutdown()
    assert "Europe/Paris" in answer, answer
    assert_one_trace(home)


def test_protocol_constants_match_the_2x_sdk() -> None:
    import mcp_types

    assert (protocol.PARSE_ERROR, protocol.INVALID_REQUEST, protocol.INTERNAL_ERROR,
            protocol.CONNECTION_CLOSED, protocol.PROTOCOL_VERSION_META_KEY) == (
        mcp_types.PARSE_ERROR, mcp_types.INVALID_REQUEST, mcp_types.INTERNAL_ERROR,
        mcp_types.CONNECTION_CLOSED, mcp_types.PROTOCOL_VERSION_META_KEY)
    assert (protocol.METHOD_NOT_FOUND, protocol.INVALID_PARAMS, protocol.REQUEST_TIMEOUT) == (
        mcp_types.METHOD_NOT_FOUND, mcp_types.INVALID_PARAMS, mcp_types.REQUEST_TIMEOUT)
