"""A small MCP server over stdio, built with the SDK and instrumented by spanguard.

Run as ``python traced_server.py HOME``: spans go to the local store under HOME
(``spanguard.configure(home=HOME, set_global=True)``, so the SDK's own SERVER
span records there too) and are flushed when the client closes stdin.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

import spanguard
from spanguard.mcp_bridge import instrument_server


def build() -> MCPServer:
    server = MCPServer("traced")

    @server.tool()
    def echo(text: str) -> str:
        return text

    @server.tool()
    def fail(reason: str) -> str:
        raise ToolError(reason)

    return server


def main() -> None:
    handle = spanguard.configure(home=sys.argv[1], service_name="traced-server",
                                 set_global=True)
    server = build()
    instrument_server(server)
    try:
        server.run("stdio")
    finally:
        handle.shutdown()


if __name__ == "__main__":
    main()
