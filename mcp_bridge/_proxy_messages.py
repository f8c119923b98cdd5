"""JSON-RPC framing helpers for the messages the proxy writes itself.

Everything else is forwarded as the bytes that arrived. Error codes are the
protocol's own (:mod:`spanguard.mcp_bridge._protocol`), so the proxy runs with
either MCP SDK major, or none. Guardrail
answers (refusals, holds) are tool results rendered by
:mod:`spanguard.mcp_bridge.guard`, not errors.
"""

from __future__ import annotations

from typing import Any

from spanguard.extras import missing_extra

try:
    import orjson
except ModuleNotFoundError as exc:
    raise missing_extra("the MCP proxy", exc, "mcp") from exc

from spanguard.mcp_bridge._protocol import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
)

__all__ = [
    "CONNECTION_CLOSED",
    "INTERNAL_ERROR",
    "INVALID_REQUEST",
    "PARSE_ERROR",
    "Message",
    "RequestId",
    "dumps",
    "error_response",
    "loads",
]

RequestId = int | str
Message = dict[str, Any]


def loads(line: bytes) -> Any:
    """Parse one frame; raises ``ValueError`` (orjson's error subclasses it)."""
    return orjson.loads(line)


def dumps(message: Message) -> bytes:
    """One frame, newline included."""
    return orjson.dumps(message) + b"\n"


def error_response(request_id: RequestId | None, code: int, message: str,
                   data: Any = None) -> bytes:
    error: Message = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return dumps({"jsonrpc": "2.0", "id": request_id, "error": error})
