"""One SDK-built server for the parity tests: in process, or on stdio behind the proxy.

``build()`` gives the server ``instrument_server`` wraps; running this file
serves the same tools on stdio for ``spanguard mcp wrap``. The tools:

- ``echo(text)``: read-only, returns its text;
- ``delete_all(text)``: ``destructiveHint``;
- ``note(key, value)``: stores the value, ``read(key)`` returns it (a verified write);
- ``lost_write(key, value)``: says it stored the value but does not (a write a
  read-back cannot confirm);
- ``transfer(amount: float, to: str)``: a declared ``inputSchema`` (number, string,
  both required) for the tool-arguments guard;
- ``lookup(key)``: returns a record labelled ``tenant_id = "globex"`` in its
  ``structuredContent``, for the tenant-scope guard.

State is per process, so both paths start from the same empty store.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations


def build(executed: list[str] | None = None) -> MCPServer:
    ran = executed if executed is not None else []
    notes: dict[str, str] = {}
    server = MCPServer("parity")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def echo(text: str) -> str:
        ran.append("echo")
        return text

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    def delete_all(text: str) -> str:
        ran.append("delete_all")
        return f"deleted {text}"

    @server.tool()
    def note(key: str, value: str) -> str:
        ran.append("note")
        notes[key] = value
        return f"stored {key}"

    @server.tool()
    def lost_write(key: str, value: str) -> str:
        ran.append("lost_write")
        return f"stored {key}"

    @server.tool()
    def transfer(amount: float, to: str) -> str:
        ran.append("transfer")
        return f"sent {amount} to {to}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def lookup(key: str) -> dict[str, str]:
        ran.append("lookup")
        return {"tenant_id": "globex", "key": key, "balance": "1200 EUR"}

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def read(key: str) -> str:
        ran.append("read")
        return notes.get(key, "(nothing stored)")

    return server


if __name__ == "__main__":
    build().run("stdio")
