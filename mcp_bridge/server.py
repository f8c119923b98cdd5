"""``instrument_server``: one TOOL span per ``tools/call`` and the guardrail hook.

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

This middleware is where guardrails run: before the tool, the enforcer may
refuse or hold the call (the tool does not run; the caller gets an ``isError``
result from :func:`spanguard.mcp_bridge.guard.refusal_result`); after it,
decisions such as a failed verification are written onto the result.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mcp.server import Server
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, format_trace_id
from pydantic import BaseModel

from spanguard import semconv as sc
from spanguard.attributes import tool_attributes
from spanguard.config import resolve_tracer_provider
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.holds import HoldError, hold_result_payload
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.steps import RunState, ToolCall, ToolOutcome
from spanguard.hashing import payload_hash
from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation, correlation_from_meta
from spanguard.mcp_bridge.guard import apply_decisions, refusal_result

__all__ = ["SpanguardServerMiddleware", "instrument_server"]

logger = logging.getLogger("spanguard.mcp_bridge")

AnyServer = Server[Any] | MCPServer[Any]

SDK_TRACER_NAME = "mcp-python-sdk"
"""Instrumentation scope of the SDK's own spans (``mcp.shared._otel``)."""

TOOL_ERROR = "tool_error"
STATUS_OK, STATUS_ERROR, STATUS_REFUSED = "ok", "error", "refused"

_RUN_STATE_KEY = "spanguard.run_state"
_MAX_SESSIONS = 4096


class SpanguardServerMiddleware:
    """A ``ServerMiddleware`` (``(ctx, call_next) -> result``) for ``tools/call``.

    Other methods pass straight through, except ``tools/list`` whose result is
    read for tool annotations. One instance serves all connections of a server;
    guard state lives in a :class:`RunState` per MCP session.
    """

    def __init__(self, server: AnyServer, tracer_provider: trace.TracerProvider,
                 enforcer: Enforcer | None = None, identity: str | None = None) -> None:
        self._server = server
        self._provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("spanguard.mcp_bridge")
        self.enforcer = enforcer if enforcer is not None and enforcer.active else None
        self.identity = identity
        self.tools = ToolAnnotations()
        self._runs: OrderedDict[str, RunState] = OrderedDict()

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
            kind=SpanKind.SERVER, context=_remote_parent(ctx.meta), attributes=attributes,
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
        arguments: Mapping[str, Any] = raw_arguments if isinstance(raw_arguments, Mapping) else {}
        arguments_hash = payload_hash(arguments)
        ids = correlation_from_meta(ctx.meta)
        connection = getattr(ctx.session, "_connection", None)
        session_id = getattr(connection, "session_id", None)
        attributes = tool_attributes(tool, arguments_hash=arguments_hash)
        attributes.update(ids.attributes())
        if session_id:
            attributes[sc.MCP_SESSION_ID] = session_id
        span.set_attributes(attributes)

        call: ToolCall | None = None
        state: RunState | None = None
        if self.enforcer is not None:
            state = self._run_state(connection, session_id, ids, span)
            if self.tools.get(tool) is None:  # first call, or a tool added since
                await self._list_tools(ctx)
            # No call id: a client re-making a held call sends a new JSON-RPC id, and
            # the call must still find its approval. {} for a tool without hints: None
            # would mean "not classified" and let a high-risk rule pass it.
            call = ToolCall(tool, arguments, annotations=self.tools.get(tool) or {},
                            arguments_hash=arguments_hash)
            try:
                self.enforcer.before_tool_call(state, call, span)
            except GuardrailViolation as violation:
                return _refuse(span, violation, tool)
            except Exception as exc:  # enforcement fails closed
                logger.exception("spanguard: guardrail failed on tool %r; refusing it", tool)
                return _refuse(span, _guard_failure(exc), tool)

        try:
            result = await call_next(ctx)
        except Exception:
            span.set_attribute(sc.TOOL_RESULT_STATUS, STATUS_ERROR)
            raise
        if self.enforcer is not None and call is not None and state is not None:
            wire = _wire(result)
            decisions = self.enforcer.after_tool_call(
                state, call, ToolOutcome(result=wire, is_error=_is_error(wire)), span)
            if any(d.kind != "allow" for d in decisions):
                result = apply_decisions(wire, decisions)
        _finish(span, _is_error(result))
        return result

    def _run_state(self, connection: object, session_id: str | None, ids: Correlation,
                   span: Span) -> RunState:
        """The guards' memory for this MCP session.

        Keyed by the caller's hashed session id when it sent one (so a
        conversation keeps its budget across reconnects), else by the
        transport's session id, else it lives on the connection itself.
        """
        assert self.enforcer is not None
        key = ids.session or session_id
        if key is not None:
            state = self._runs.get(key)
            if state is not None:
                self._runs.move_to_end(key)
                return state
            state = self._new_state(key, ids, span)
            self._runs[key] = state
            if len(self._runs) > _MAX_SESSIONS:
                self.enforcer.end_run(self._runs.popitem(last=False)[1])
            return state
        per_connection = getattr(connection, "state", None)
        if not isinstance(per_connection, dict):
            return self._new_state(f"mcp-request-{id(span)}", ids, span)
        state = per_connection.get(_RUN_STATE_KEY)
        if not isinstance(state, RunState):
            state = self._new_state(f"mcp-connection-{id(connection)}", ids, span)
            per_connection[_RUN_STATE_KEY] = state
            exit_stack = getattr(connection, "exit_stack", None)
            if exit_stack is not None:
                exit_stack.callback(self.enforcer.end_run, state)
        return state

    def _new_state(self, key: str, ids: Correlation, span: Span) -> RunState:
        assert self.enforcer is not None
        return self.enforcer.start_run(
            key, identity=self.identity, session=ids.session, user=ids.user, tenant=ids.tenant,
            trace_id=format_trace_id(span.get_span_context().trace_id))

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
            # Guards then see annotations=None ("unknown"), which they must treat as such.
            logger.warning("spanguard: could not list tools for their annotations",
                           exc_info=True)

    def _observe_tools(self, result: object) -> None:
        if isinstance(result, BaseModel | Mapping):
            self.tools.observe(_wire(result))


def instrument_server(
    server: AnyServer,
    policy: Policy | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    identity: str | None = None,
) -> SpanguardServerMiddleware:
    """Add spanguard to an SDK-built server (low-level ``Server`` or ``MCPServer``).

    The middleware goes right after the SDK's OpenTelemetry middleware, so it
    sees the SDK's span and runs guards before any other middleware or the tool.
    ``identity`` names the maker for hold rules. Calling it twice returns the
    middleware already installed.
    """
    chain: list[ServerMiddleware[Any]] = server.middleware
    for middleware in chain:
        if isinstance(middleware, SpanguardServerMiddleware):
            return middleware
    provider = resolve_tracer_provider(tracer_provider)
    enforcer = Enforcer(policy, provider) if policy is not None else None
    installed = SpanguardServerMiddleware(server, provider, enforcer, identity)
    position = next((i + 1 for i, m in enumerate(chain)
                     if isinstance(m, OpenTelemetryMiddleware)), 0)
    chain.insert(position, installed)
    return installed


def _remote_parent(meta: Mapping[str, Any] | None) -> Context | None:
    """The caller's context from ``_meta``; ``None`` (ambient parent) if absent or bad."""
    if not meta:
        return None
    try:
        ctx = propagate.extract(meta, context=Context())
    except (ValueError, TypeError, AttributeError):
        return None
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def _wire(result: object) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(result) if isinstance(result, Mapping) else {}


def _is_error(result: object) -> bool:
    if isinstance(result, CallToolResult):
        return result.is_error is True
    return isinstance(result, Mapping) and result.get("isError") is True


def _finish(span: Span, is_error: bool) -> None:
    if is_error:
        span.set_attribute(sc.TOOL_RESULT_STATUS, STATUS_ERROR)
        span.set_attribute(sc.ERROR_TYPE, TOOL_ERROR)
        span.set_status(StatusCode.ERROR)
    else:
        span.set_attribute(sc.TOOL_RESULT_STATUS, STATUS_OK)


def _refuse(span: Span, violation: GuardrailViolation, tool: str) -> CallToolResult:
    span.set_attributes({
        sc.TOOL_RESULT_STATUS: STATUS_REFUSED,
        sc.GUARDRAIL_NAME: violation.guard,
        sc.ERROR_TYPE: TOOL_ERROR,
    })
    span.set_status(StatusCode.ERROR, violation.error_type)
    if isinstance(violation, HoldError):  # the approval id and the command to approve it
        span.set_attribute(sc.HOLD_ID, violation.hold_id)
        return CallToolResult.model_validate(hold_result_payload(violation))
    return refusal_result(violation, tool)


def _guard_failure(exc: Exception) -> GuardrailViolation:
    violation = GuardrailViolation(
        f"the guardrail check failed ({type(exc).__name__}), so the call was refused")
    violation.guard = "enforcer"
    violation.error_type = "guardrail_error"
    return violation
