"""MCP bridge: trace context across processes, server instrumentation, the stdio proxy.

The stdio proxy (``spanguard mcp wrap -- CMD ARGS...``) wraps any MCP server
without changing it; :class:`McpProxy` is its engine for embedding.
"""

from spanguard.mcp_bridge.proxy import McpProxy, RestartPolicy

__all__ = ["McpProxy", "RestartPolicy"]
