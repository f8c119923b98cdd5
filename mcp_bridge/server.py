"""``instrument_server`` on mcp 2.x: one TOOL span per ``tools/call`` and the guardrail hook.

(mcp 1.x servers are instrumented by :mod:`spanguard.mcp_bridge._server_v1`;
:func:`spanguard.mcp_bridge.instrument_server` picks the one for the installed SDK.)

The MCP SDK's first middleware (``OpenTelemetryMiddleware``) already opens a
SERVER span per request, continuing the caller's trace from ``params._meta``,
named ``tools/call {tool}`` with ``mcp.method.name``, ``mcp.protocol.version``,
``jsonrpc.request.id``, ``gen_ai.operation.name`` and ``gen_ai.tool.name``, and
it marks ``isError`` results ``error.type = tool_error``. spanguard's middleware
runs right inside it and *enriches that span* (the OTel MCP conventions ask for
enrichment, not a second span): OpenInference TOOL kind, argument hash, result
status, ``mcp.session.id`` and the caller's hashed correlation ids.

The SDK's tracer is bound to the global tracer provider. When spanguard's
provider is a different one (an explicit ``tracer_provider``, or
``spanguard.configure()`` without ``set_global=True``), the SDK's span cannot
land there, so the middleware opens the one server span itself, in spanguard's
provider, with the same name, kind, parent and attributes. Either way each
provider receives exactly one server span per call.

Guardrails run here through a :class:`~spanguard.mcp_bridge.gate.ToolGate`, the
same gate the stdio proxy uses, so both paths answer alike: before the tool,
the gate may refuse or hold the call (the tool does not run; the caller gets the
gate's ``isError`` result); after it, the gate makes the verifier's read-back
through this server's own ``tools/call`` handler and writes its findings onto
the result. The SDK's middleware marks every ``isError`` result
``error.type=tool_error`` after this one returns; a result the gate wrote
(a refusal, a hold, an unconfirmed action) is not a tool failure, so it is
returned in a form the SDK does not classify and the span keeps the gate's
``error.type``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from spanguard.mcp_bridge._sdk import sdk_mismatch

try:
    from mcp.server import Server
    from mcp.server._otel import OpenTelemetryMiddleware
    from mcp.server.context import (
        CallNext,
        HandlerResult,
        ServerMiddleware,
        ServerRequestContext,
    )
    from mcp.server.mcpserver import MCPServer
    from mcp.shared.exceptions import MCPError
    from pydantic import BaseModel, RootModel
except ImportError as exc:
    raise sdk_mismatch(__name__, exc, needs=2) from exc

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from spanguard import semconv as sc
from spanguard.attributes import tool_attributes
from spanguard.config import resolve_tracer_provider
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.steps import RunState, ToolCall
from spanguard.hashing import payload_hash
from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation, correlation_from_meta, parent_from_meta
from spanguard.mcp_bridge.gate import STATUS_ERROR, ToolGate, mark_tool_result

__all__ = ["SpanguardServerMiddleware", "instrument_server"]

logger = logging.getLogger("spanguard.mcp_bridge")

AnyServer = Server[Any] | MCPServer[Any]

SDK_TRACER_NAME = "mcp-python-sdk"
"""Instrumentation scope of the SDK's own spans (``mcp.shared._otel``)."""

_RUN_STATE_KEY = "spanguard.run_state"


class _GateAnswer(RootModel[dict[str, Any]]):
    """A wire result the gate wrote, in a shape the SDK's span middleware leaves alone.

    Serialized exactly like the dict it holds; see the module docstring for why.
    """


class SpanguardServerMiddleware:
    """A ``ServerMiddleware`` (``(ctx, call_next) -> result``) for ``tools/call``.

    Other methods pass straight through, except ``tools/list`` whose result is
    read for tool annotations. One instance serves all connections of a server;
    the gate keeps guard state per MCP session.
    """

    def __init__(self, server: AnyServer, tracer_provider: trace.TracerProvider,
                 gate: ToolGate) -> None:
        self._server = server
        self._provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("spanguard.mcp_bridge",
                                                  schema_url=sc.SEMCONV_SCHEMA_URL)
        self.gate = gate

    @property
    def tools(self) -> ToolAnnotations:
        """The annotations the server advertised, as the gate's guards see them."""
        return self.gate.tools

    async def __call__(self, ctx: ServerRequestContext[Any, Any],
                       call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/list":
            result = await call_next(ctx)
            self._observe_tools(result)
            return result
        if ctx.method != "tools/call":
            return await call_next(ctx)
        current = trace.get_current_span()
        if self._is_sdk_span(current):
            return await self._call_tool(ctx, call_next, current)
        name = (ctx.params or {}).get("name")
        attributes: dict[str, Any] = {
            sc.MCP_METHOD_NAME: ctx.method,
            sc.MCP_PROTOCOL_VERSION: ctx.protocol_version,
        }
        if ctx.request_id is not None:
            attributes[sc.JSONRPC_REQUEST_ID] = str(ctx.request_id)
        with self._tracer.start_as_current_span(
            f"tools/call {name}" if isinstance(name, str) else "tools/call",
            kind=SpanKind.SERVER, context=parent_from_meta(ctx.meta), attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            try:
                return await self._call_tool(ctx, call_next, span)
            except Exception as exc:
                # No exception message: for bad params it quotes the caller's input.
                code = str(exc.error.code) if isinstance(exc, MCPError) else type(exc).__qualname__
                span.set_attribute(sc.ERROR_TYPE, code)
                span.set_status(StatusCode.ERROR)
                raise

    def _is_sdk_span(self, span: Span) -> bool:
        """Is ``span`` the SDK's SERVER span for this request, recording where we export?"""
        scope = getattr(span, "instrumentation_scope", None)
        return (span.is_recording()
                and getattr(scope, "name", None) == SDK_TRACER_NAME
                and getattr(span, "kind", None) is SpanKind.SERVER
                and self._provider is trace.get_tracer_provider())

    async def _call_tool(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext,
                         span: Span) -> HandlerResult:
        params = ctx.params or {}
        tool = params.get("name")
        if not isinstance(tool, str):
            return await call_next(ctx)  # the SDK rejects it as INVALID_PARAMS
        raw_arguments = params.get("arguments")
        if raw_arguments is not None and not isinstance(raw_arguments, Mapping):
            return await call_next(ctx)  # the SDK rejects it as INVALID_PARAMS, unrun
        arguments: Mapping[str, Any] = raw_arguments or {}
        arguments_hash = payload_hash(arguments)
        ids = correlation_from_meta(ctx.meta)
        connection = getattr(ctx.session, "_connection", None)
        session_id = getattr(connection, "session_id", None)
        attributes = tool_attributes(tool, arguments_hash=arguments_hash)
        if ids:
            attributes.update(ids.attributes())
        if session_id:
            attributes[sc.MCP_SESSION_ID] = session_id
        span.set_attributes(attributes)
        if not self.gate.active:
            result = await _run(call_next, ctx, span)
            mark_tool_result(span, result if isinstance(result, Mapping) else _wire(result))
            return result

        gate = self.gate
        run = self._run_state(connection, session_id, ids, span)
        if gate.tools.get(tool) is None:  # first call, or a tool added since
            await self._list_tools(ctx)
        # No call id: a client re-making a held call sends a new JSON-RPC id, and
        # the call must still find its approval. {} for a tool without hints: None
        # would mean "not classified" and let a high-risk rule pass it.
        call = ToolCall(tool, arguments, annotations=gate.tools.get(tool) or {},
                        arguments_hash=arguments_hash)
        refused = await gate.admit(run, call, span, ctx.meta)
        if refused is not None:
            return _GateAnswer(refused)
        wire = _wire(await _run(call_next, ctx, span))
        mark_tool_result(span, wire)

        async def read_back(name: str, read_arguments: Mapping[str, Any]) -> Any:
            """Another tool of this server, through the rest of the chain (its own handler)."""
            return _wire(await call_next(replace(
                ctx, params={"name": name, "arguments": dict(read_arguments)}, meta=None)))

        settled = await gate.settle(run, call, wire, span, read_back)
        return wire if settled is None else _GateAnswer(settled)

    def _run_state(self, connection: object, session_id: str | None, ids: Correlation,
                   span: Span) -> RunState:
        """The guards' memory for this MCP session.

        Keyed by the caller's hashed session id when it sent one (so a
        conversation keeps its budget across reconnects), else by the
        transport's session id, else it lives on the connection itself.
        """
        key = ids.session or session_id
        if key is not None:
            return self.gate.session_run(key, ids, span)
        per_connection = getattr(connection, "state", None)
        if not isinstance(per_connection, dict):
            return self.gate.start_run(f"mcp-request-{id(span)}", ids, span)
        run = per_connection.get(_RUN_STATE_KEY)
        if not isinstance(run, RunState):
            run = self.gate.start_run(f"mcp-connection-{id(connection)}", ids, span)
            per_connection[_RUN_STATE_KEY] = run
            exit_stack = getattr(connection, "exit_stack", None)
            if exit_stack is not None:
                exit_stack.callback(self.gate.end_run, run)
        return run

    async def _list_tools(self, ctx: ServerRequestContext[Any, Any]) -> None:
        """Read the tool annotations the server advertises (before a guarded call)."""
        try:
            if isinstance(self._server, MCPServer):
                tools = await self._server.list_tools()
                self.tools.observe({"tools": [
                    t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools]})
                return
            entry = self._server.get_request_handler("tools/list")
            if entry is None:
                return
            result = await entry.handler(replace(ctx, method="tools/list", params=None),
                                         entry.params_type.model_validate({}))
            self._observe_tools(result)
        except Exception:
            # Guards then see annotations {} ("no hints"), which they must treat as such.
            logger.warning("spanguard: could not list tools for their annotations",
                           exc_info=True)

    def _observe_tools(self, result: object) -> None:
        if isinstance(result, BaseModel | Mapping):
            self.tools.observe(_wire(result))


def instrument_server(
    server: AnyServer,
    policy: Policy | str | os.PathLike[str] | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    identity: str | None = None,
    hold_wait: float = 0.0,
) -> SpanguardServerMiddleware:
    """Add spanguard to an SDK-built server (low-level ``Server`` or ``MCPServer``).

    The middleware goes right after the SDK's OpenTelemetry middleware, so it
    sees the SDK's span and runs guards before any other middleware or the tool.
    ``policy`` is a ``Policy``, a TOML path, or None for ``SPANGUARD_POLICY``
    (unset: tracing only); ``identity`` names the maker for hold rules (default:
    the OS user); ``hold_wait`` > 0 lets a held call wait that many seconds for a
    checker. Holds and approvals are bound to the server's ``name`` (a server
    wrapped with ``spanguard mcp wrap --name NAME`` under the same name shares
    them). Calling it twice returns the middleware already installed.
    """
    chain: list[ServerMiddleware[Any]] = server.middleware
    for middleware in chain:
        if isinstance(middleware, SpanguardServerMiddleware):
            return middleware
    provider = resolve_tracer_provider(tracer_provider)
    # Approvals are bound to the server: its own name, as `spanguard mcp wrap --name`.
    gate = ToolGate(policy, tracer_provider=provider, meter_provider=meter_provider,
                    identity=identity, hold_wait=hold_wait, server_name=server.name)
    installed = SpanguardServerMiddleware(server, provider, gate)
    position = next((i + 1 for i, m in enumerate(chain)
                     if isinstance(m, OpenTelemetryMiddleware)), 0)
    chain.insert(position, installed)
    return installed


async def _run(call_next: CallNext, ctx: ServerRequestContext[Any, Any],
               span: Span) -> HandlerResult:
    """The rest of the chain (the tool); a raised error marks the result status first."""
    try:
        return await call_next(ctx)
    except Exception:
        span.set_attribute(sc.TOOL_RESULT_STATUS, STATUS_ERROR)
        raise


def _wire(result: object) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return dumped
    return dict(result) if isinstance(result, Mapping) else {}
