"""MCP bridge: trace context across processes, server instrumentation, the stdio proxy.

- Client side: the MCP SDK injects ``traceparent`` into every request's
  ``params._meta``; :func:`correlation` adds hashed session/user/tenant ids as
  W3C baggage to the same ``_meta``.
- In-process servers: :func:`instrument_server` enriches the SDK's SERVER span
  of each ``tools/call`` into a TOOL span and guards the call.
- Any server, in any language: the stdio proxy (``spanguard mcp wrap -- CMD
  ARGS...``) wraps it unchanged; :class:`McpProxy` is its engine for embedding.
- Both guard through one :class:`ToolGate`, which renders every guardrail answer
  (:mod:`spanguard.mcp_bridge.guard`): the same text, ``_meta`` key
  (:data:`GUARDRAIL_META_KEY`) and ``error.type`` on either path.
"""

from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation, correlation, correlation_from_meta
from spanguard.mcp_bridge.gate import USAGE_META_KEY, ToolGate
from spanguard.mcp_bridge.guard import GUARDRAIL_META_KEY, apply_decisions, refusal_result
from spanguard.mcp_bridge.proxy import McpProxy, RestartPolicy
from spanguard.mcp_bridge.server import SpanguardServerMiddleware, instrument_server

VERIFICATION_META_KEY = GUARDRAIL_META_KEY
"""Deprecated 0.1 name: verification status now sits in
``_meta["spanguard/guardrail"]["verification"]`` (``{"status", "detail"}``)."""

__all__ = [
    "GUARDRAIL_META_KEY",
    "USAGE_META_KEY",
    "VERIFICATION_META_KEY",
    "Correlation",
    "McpProxy",
    "RestartPolicy",
    "SpanguardServerMiddleware",
    "ToolAnnotations",
    "ToolGate",
    "apply_decisions",
    "correlation",
    "correlation_from_meta",
    "instrument_server",
    "refusal_result",
]
