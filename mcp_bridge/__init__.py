"""MCP bridge: trace context and correlation across MCP, and guardrails on MCP servers.

- Client side: the MCP SDK injects ``traceparent`` into every request's
  ``params._meta``; :func:`correlation` adds hashed session/user/tenant ids as
  W3C baggage to the same ``_meta``.
- In-process servers: :func:`instrument_server` enriches the SDK's SERVER span
  of each ``tools/call`` into a TOOL span and runs the policy's guards there.
- :mod:`spanguard.mcp_bridge.guard` turns guardrail decisions into MCP results.
"""

from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation, correlation, correlation_from_meta
from spanguard.mcp_bridge.guard import apply_decisions, refusal_result
from spanguard.mcp_bridge.server import SpanguardServerMiddleware, instrument_server

__all__ = [
    "Correlation",
    "SpanguardServerMiddleware",
    "ToolAnnotations",
    "apply_decisions",
    "correlation",
    "correlation_from_meta",
    "instrument_server",
    "refusal_result",
]
