"""What the proxy writes on its spans: one SERVER span per client request.

Kept apart from the message pump so the pump stays a short, flat loop. The
span names follow the MCP semantic conventions (``{mcp.method.name} {target}``,
as the SDK's own server middleware names them), so a span the proxy opens and
one an SDK-built server opens for the same request read alike.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

from spanguard import semconv as sc
from spanguard.attributes import tool_attributes

# The MCP conventions' network.transport for a server reached over stdio.
STDIO_TRANSPORT = "pipe"
# Methods whose params name a target that belongs in the span name.
_TARGET_METHODS = frozenset({"tools/call", "prompts/get"})


def request_span_name(method: str, target: str | None) -> str:
    return f"{method} {target}" if target else method


def request_target(method: str, params: Any) -> str | None:
    if method in _TARGET_METHODS and isinstance(params, dict):
        name = params.get("name")
        if isinstance(name, str):
            return name
    return None


def request_attributes(method: str, request_id: object, protocol_version: str | None,
                       session_id: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {sc.MCP_METHOD_NAME: method,
                             sc.JSONRPC_REQUEST_ID: str(request_id),
                             sc.NETWORK_TRANSPORT: STDIO_TRANSPORT}
    if protocol_version:
        attrs[sc.MCP_PROTOCOL_VERSION] = protocol_version
    if session_id:
        attrs[sc.MCP_SESSION_ID] = session_id
    return attrs


def tool_call_attributes(tool: str, request_id: object, arguments_hash: str) -> dict[str, Any]:
    return tool_attributes(tool, call_id=str(request_id), arguments_hash=arguments_hash)


def finish_error(span: Span, error: Any) -> None:
    """The upstream answered with a JSON-RPC error: its code is the error type."""
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    code_text = str(code) if code is not None else "jsonrpc_error"
    span.set_attribute(sc.ERROR_TYPE, code_text)
    span.set_attribute(sc.RPC_RESPONSE_STATUS_CODE, code_text)
    span.set_status(Status(StatusCode.ERROR, message if isinstance(message, str) else None))


def finish_unanswered(span: Span, outcome: str, description: str) -> None:
    """The proxy closed the request itself (upstream gone, client gone, cancelled)."""
    span.set_attribute(sc.MCP_PROXY_OUTCOME, outcome)
    if outcome != "cancelled":
        span.set_attribute(sc.ERROR_TYPE, outcome)
        span.set_status(Status(StatusCode.ERROR, description))
