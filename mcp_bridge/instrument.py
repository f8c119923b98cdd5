"""``instrument_server`` for whichever MCP SDK major is installed.

- mcp 2.x: :class:`~spanguard.mcp_bridge.server.SpanguardServerMiddleware` joins
  the server's middleware chain right after the SDK's own OpenTelemetry
  middleware and enriches the SDK's SERVER span of each ``tools/call``.
- mcp 1.x: no middleware and no SDK spans, so
  :class:`~spanguard.mcp_bridge._server_v1.SpanguardToolHandler` replaces the
  ``tools/call`` handler and opens the SERVER span itself; register the tools
  before instrumenting a low-level ``Server`` (``FastMCP`` registers its handler
  when it is built).

Both return an object with ``gate`` (the :class:`~spanguard.mcp_bridge.gate.ToolGate`)
and ``tools`` (the annotations seen), and answer guarded calls identically.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from spanguard.config import resolve_tracer_provider
from spanguard.extras import MissingExtra
from spanguard.guardrails.policy import Policy
from spanguard.mcp_bridge._sdk import sdk_major

if TYPE_CHECKING:
    from spanguard.mcp_bridge._server_v1 import SpanguardToolHandler
    from spanguard.mcp_bridge.server import SpanguardServerMiddleware

__all__ = ["instrument_server"]


def instrument_server(
    server: Any,
    policy: Policy | str | os.PathLike[str] | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    identity: str | None = None,
    hold_wait: float = 0.0,
) -> SpanguardServerMiddleware | SpanguardToolHandler:
    """Add spanguard to an SDK-built server (mcp 2.x ``Server``/``MCPServer``, mcp 1.x
    ``Server``/``FastMCP``): one TOOL span per ``tools/call`` and the guards on it.

    ``policy`` is a ``Policy``, a TOML path, or None for ``SPANGUARD_POLICY``
    (unset: tracing only); ``identity`` names the maker for hold rules (default:
    the OS user); ``hold_wait`` > 0 lets a held call wait that many seconds for a
    checker. Holds and approvals are bound to the server's ``name`` (``spanguard mcp
    wrap --name NAME`` in front of a server of that name shares them). Calling it
    twice returns what the first call installed.
    """
    major = sdk_major()
    if major is None:
        raise MissingExtra("spanguard.mcp_bridge.instrument_server", "mcp", "mcp")
    if major >= 2:
        from spanguard.mcp_bridge import server as v2

        return v2.instrument_server(server, policy, tracer_provider=tracer_provider,
                                    meter_provider=meter_provider, identity=identity,
                                    hold_wait=hold_wait)
    from spanguard.mcp_bridge import _server_v1 as v1
    from spanguard.mcp_bridge.gate import ToolGate

    already = v1.installed(server)
    if already is not None:
        return already
    provider = resolve_tracer_provider(tracer_provider)
    # Approvals are bound to the server: its own name, as `spanguard mcp wrap --name`.
    gate = ToolGate(policy, tracer_provider=provider, meter_provider=meter_provider,
                    identity=identity, hold_wait=hold_wait,
                    server_name=getattr(server, "name", None))
    return v1.install(server, provider, gate)
