"""Wrap an unmodified MCP server with `spanguard mcp wrap`, and call it.

    python examples/mcp_wrap_server.py

It starts `mcp-server-time` (from PyPI) behind the proxy, exactly as an MCP
client would from its config, lists the tools and calls one. The proxy writes
one SERVER span per request (continuing the caller's trace from
params._meta.traceparent) to the local store. A Claude-Desktop-style config does
the same by changing only `command` and `args`:

    { "mcpServers": { "time": {
        "command": "spanguard",
        "args": ["mcp", "wrap", "--policy", "/etc/spanguard/policy.toml", "--",
                 "python", "-m", "mcp_server_time", "--local-timezone", "UTC"],
        "env": { "SPANGUARD_HOME": "/home/me/.spanguard" } } } }
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import spanguard


async def call_time_server(handle: spanguard.SpanguardHandle) -> str:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "spanguard", "mcp", "wrap", "--identity", "example", "--",
              sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"],
        env=dict(os.environ))
    tracer = handle.tracer_provider.get_tracer("example")
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        print("tools:", ", ".join(t.name for t in tools.tools))
        with tracer.start_as_current_span("execute_tool get_current_time"):
            result = await session.call_tool("get_current_time", {"timezone": "Europe/Lisbon"})
    return "".join(getattr(block, "text", "") for block in result.content)


def main() -> None:
    handle = spanguard.configure()
    print(asyncio.run(call_time_server(handle)))
    handle.shutdown()
    print("spans: spanguard traces list  (the proxy's and this script's, in one trace)")


if __name__ == "__main__":
    main()
