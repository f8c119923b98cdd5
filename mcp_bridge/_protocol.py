"""The MCP wire constants the bridge needs, owned here so the proxy needs no MCP SDK.

The stdio proxy speaks JSON-RPC as bytes and must run next to a server pinned to
either SDK major (mcp 1.x has no ``PROTOCOL_VERSION_META_KEY``; 2.x moved the
error codes to ``mcp_types``), or with no SDK installed at all. These values are
the protocol's, not an SDK's; a test compares them with whichever SDK is installed.
"""

from __future__ import annotations

__all__ = [
    "CONNECTION_CLOSED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PROTOCOL_VERSION_META_KEY",
    "REQUEST_TIMEOUT",
    "ProtocolError",
    "error_code",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
CONNECTION_CLOSED = -32000
"""MCP's code for "the connection closed" (what SDK clients see when a server dies)."""
REQUEST_TIMEOUT = -32001
"""MCP's code for a request that was not answered in time."""

PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
"""``params._meta`` key of the protocol version a request is made under (2026-07-28
envelope); older clients send none and the version comes from ``initialize``."""


class ProtocolError(Exception):
    """A JSON-RPC error answer to a request the bridge made itself (a read-back)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_code(exc: BaseException) -> int | None:
    """The JSON-RPC code an MCP error carries, from the bridge or either SDK major.

    Both majors' errors (``McpError`` in 1.x, ``MCPError`` in 2.x) hold the
    ``ErrorData`` answered as ``error``; None for any other exception.
    """
    code = exc.code if isinstance(exc, ProtocolError) else \
        getattr(getattr(exc, "error", None), "code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None
