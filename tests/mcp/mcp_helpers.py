"""Small real servers and an in-memory connection for the MCP bridge tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import ClientSession
from mcp.client._memory import InMemoryTransport  # the SDK's in-memory test transport
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    TextContent,
    Tool,
    ToolAnnotations,
)


def high_level_server(executed: list[str] | None = None) -> MCPServer:
    """``echo``, ``fail`` (a tool error) and a destructive ``delete_all``."""
    ran = executed if executed is not None else []
    server = MCPServer("high")

    @server.tool()
    def echo(text: str) -> str:
        ran.append("echo")
        return text

    @server.tool()
    def fail(text: str) -> str:
        ran.append("fail")
        raise ToolError(text)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    def delete_all(text: str) -> str:
        ran.append("delete_all")
        return f"deleted {text}"

    return server


def low_level_server(executed: list[str] | None = None) -> Server[Any]:
    """The same three tools on the low-level ``Server`` API."""
    ran = executed if executed is not None else []
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    tools = [
        Tool(name="echo", input_schema=schema),
        Tool(name="fail", input_schema=schema),
        Tool(name="delete_all", input_schema=schema,
             annotations=ToolAnnotations(destructive_hint=True)),
    ]

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        ran.append(params.name)
        text = str((params.arguments or {}).get("text", ""))
        return CallToolResult(content=[TextContent(type="text", text=text)],
                              is_error=params.name == "fail")

    return Server("low", on_list_tools=list_tools, on_call_tool=call_tool)


@asynccontextmanager
async def connect(server: Server[Any] | MCPServer) -> AsyncIterator[ClientSession]:
    """A plain ``ClientSession`` talking JSON-RPC to ``server`` in memory."""
    async with InMemoryTransport(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session
