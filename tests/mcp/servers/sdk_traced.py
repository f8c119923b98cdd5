"""An SDK-built MCP server that exports its own spans into SPANGUARD_HOME.

The SDK's server opens a SERVER span per request from ``params._meta``; with a
real tracer provider those spans show whether the proxy's injected context
reaches a server: caller -> proxy -> server in one trace.
"""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import MCPServer

import spanguard


def main() -> None:
    handle = spanguard.configure(service_name="sdk-traced-server", set_global=True)
    server = MCPServer("sdk-traced")

    @server.tool(name="add", description="Add two integers")
    def add(a: int, b: int) -> int:
        return a + b

    try:
        anyio.run(server.run_stdio_async)
    finally:
        handle.shutdown()


if __name__ == "__main__":
    main()
