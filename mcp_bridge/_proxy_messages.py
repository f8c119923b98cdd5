"""JSON-RPC helpers for the messages the proxy writes itself.

Everything else is forwarded as the bytes that arrived (client requests with
their ``_meta`` spliced in, :mod:`._proxy_splice`). What the proxy writes is
encoded exactly (:func:`~._proxy_codec.dumps`): an id or a result it echoes
keeps every digit. Error codes are the protocol's own
(:mod:`spanguard.mcp_bridge._protocol`), so the proxy runs with either MCP SDK
major, or none. Guardrail answers (refusals, holds) are tool results rendered
by :mod:`spanguard.mcp_bridge.guard`, not errors.
"""

from __future__ import annotations

from typing import Any

from spanguard.mcp_bridge._protocol import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REQUEST_TIMEOUT,
)
from spanguard.mcp_bridge._proxy_codec import dumps

__all__ = [
    "CONNECTION_CLOSED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "REQUEST_TIMEOUT",
    "Message",
    "RequestId",
    "dumps",
    "error_object",
    "error_response",
]

RequestId = int | str
Message = dict[str, Any]


def error_object(request_id: RequestId | None, code: int, message: str,
                 data: Any = None) -> Message:
    error: Message = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def error_response(request_id: RequestId | None, code: int, message: str,
                   data: Any = None) -> bytes:
    """One error frame, newline included."""
    return dumps(error_object(request_id, code, message, data))
