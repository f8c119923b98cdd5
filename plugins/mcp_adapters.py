"""langchain-mcp-adapters: MCP tools of a LangGraph agent continue the agent's trace.

::

    from langchain_mcp_adapters.client import MultiServerMCPClient
    from spanguard.plugins.mcp_adapters import TraceContextInterceptor

    client = MultiServerMCPClient(servers, tool_interceptors=[TraceContextInterceptor()])
    tools = await client.get_tools()     # each call: agent -> adapter -> server, one trace

The adapters' extension point for a tool call is a ``ToolCallInterceptor``; it
runs inside the tool, where the LangChain handler has made ``execute_tool
{tool}`` the current span and published the run's ids as the
:func:`spanguard.run_context`. Its request has no ``_meta`` field, and the adapters
open the MCP session themselves (a new one per call unless you pass one), so the
interceptor marks the call with :func:`spanguard.mcp_bridge.client.propagate_requests`:
every request of the call, ``initialize`` included, carries ``traceparent`` and the
run's hashed session/user/tenant ids as baggage in ``params._meta``. A server
behind ``spanguard mcp wrap`` (or instrumented with ``instrument_server``)
continues the trace.

langchain-mcp-adapters requires mcp 1.x (``spanguard[mcp-adapters]`` installs a
set that resolves); on mcp 1.x the propagation is spanguard's, on 2.x the SDK's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from spanguard.extras import missing_extra

try:
    import langchain_mcp_adapters.interceptors  # noqa: F401 (checks the dependency)
except ModuleNotFoundError as exc:
    raise missing_extra(__name__, exc, "mcp-adapters") from exc

from spanguard.mcp_bridge.client import propagate_requests

__all__ = ["TraceContextInterceptor"]


class TraceContextInterceptor:
    """A ``ToolCallInterceptor``: the call's MCP requests carry the agent's context.

    Put it first in ``tool_interceptors`` so interceptors after it (retries, say)
    send the context on every attempt. Stateless: one instance serves any
    number of clients and concurrent calls.
    """

    async def __call__(self, request: Any,
                       handler: Callable[[Any], Awaitable[Any]]) -> Any:
        with propagate_requests():
            return await handler(request)
