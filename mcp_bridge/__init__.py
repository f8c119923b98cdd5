"""MCP bridge: trace context across processes, server instrumentation, the stdio proxy.

- Client side: the MCP SDK 2.x injects ``traceparent`` into every request's
  ``params._meta``; with mcp 1.x, which sends none, :func:`propagate_context`
  (a ``ClientSession``) or :func:`outgoing_meta` (one call) does it.
  :func:`correlation` adds hashed session/user/tenant ids as W3C baggage to the
  same ``_meta``.
- In-process servers: :func:`instrument_server` makes each ``tools/call`` a TOOL
  span and guards the call (mcp 2.x: enriches the SDK's span through its
  middleware chain; mcp 1.x: wraps the ``tools/call`` handler).
- Any server, in any language: the stdio proxy (``spanguard mcp wrap -- CMD
  ARGS...``) wraps it unchanged and needs no MCP SDK; :class:`McpProxy` is its
  engine for embedding.
- Both guard through one :class:`ToolGate`, which renders every guardrail answer
  (:mod:`spanguard.mcp_bridge.guard`): the same text, ``_meta`` key
  (:data:`GUARDRAIL_META_KEY`) and ``error.type`` on either path.

Names that need an optional dependency are imported on first use, so
``correlation`` works with any ``mcp`` (or none) and a missing one is named with
the extra that brings it (:class:`spanguard.extras.MissingExtra`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.client import outgoing_meta, propagate_context
from spanguard.mcp_bridge.correlation import Correlation, correlation, correlation_from_meta
from spanguard.mcp_bridge.guard import GUARDRAIL_META_KEY, apply_decisions, refusal_result

if TYPE_CHECKING:
    from spanguard.mcp_bridge.gate import USAGE_META_KEY, ToolGate
    from spanguard.mcp_bridge.instrument import instrument_server
    from spanguard.mcp_bridge.proxy import McpProxy, RestartPolicy
    from spanguard.mcp_bridge.server import SpanguardServerMiddleware

VERIFICATION_META_KEY = GUARDRAIL_META_KEY
"""Deprecated 0.1 name: verification status now sits in
``_meta["spanguard/guardrail"]["verification"]`` (``{"status", "detail"}``)."""

_LAZY = {
    "USAGE_META_KEY": "spanguard.mcp_bridge.gate",
    "ToolGate": "spanguard.mcp_bridge.gate",
    "McpProxy": "spanguard.mcp_bridge.proxy",
    "RestartPolicy": "spanguard.mcp_bridge.proxy",
    "SpanguardServerMiddleware": "spanguard.mcp_bridge.server",
    "instrument_server": "spanguard.mcp_bridge.instrument",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "outgoing_meta",
    "propagate_context",
    "refusal_result",
]
