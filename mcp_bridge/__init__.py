"""MCP bridge: trace context across processes, server instrumentation, the stdio proxy.

- Client side: the MCP SDK injects ``traceparent`` into every request's
  ``params._meta``; :func:`correlation` adds hashed session/user/tenant ids as
  W3C baggage to the same ``_meta``.
- In-process servers: :func:`instrument_server` enriches the SDK's SERVER span
  of each ``tools/call`` into a TOOL span and runs the policy's guards there.
- Any server, in any language: the stdio proxy (``spanguard mcp wrap -- CMD
  ARGS...``) wraps it unchanged; :class:`McpProxy` is its engine for embedding.
- :mod:`spanguard.mcp_bridge.guard` turns guardrail decisions into MCP results.
"""

from spanguard.mcp_bridge._proxy_guard import USAGE_META_KEY, VERIFICATION_META_KEY
from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation, correlation, correlation_from_meta
from spanguard.mcp_bridge.guard import apply_decisions, refusal_result
from spanguard.mcp_bridge.proxy import McpProxy, RestartPolicy
from spanguard.mcp_bridge.server import SpanguardServerMiddleware, instrument_server

__all__ = [
    "USAGE_META_KEY",
    "VERIFICATION_META_KEY",
    "Correlation",
    "McpProxy",
    "RestartPolicy",
    "SpanguardServerMiddleware",
    "ToolAnnotations",
    "apply_decisions",
    "correlation",
    "correlation_from_meta",
    "instrument_server",
    "refusal_result",
]
