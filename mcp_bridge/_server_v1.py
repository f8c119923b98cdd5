"""``instrument_server`` on mcp 1.x: the ``tools/call`` handler, wrapped.

mcp 1.x servers (the low-level ``Server`` and ``FastMCP``) have no middleware
chain and make no spans of their own. So spanguard replaces the server's
``tools/call`` request handler with one that opens the SERVER span itself
(``tools/call {tool}``, continuing the caller's trace from ``params._meta``), runs
the :class:`~spanguard.mcp_bridge.gate.ToolGate` around the original handler, and
writes the same attributes and guardrail answers as the 2.x middleware. Other
methods (``tools/list``, resources, prompts) get no span: 1.x has none to enrich.

The SDK is reached through its module objects (``Any``): the type checker sees
the installed 2.x SDK, whose names differ.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from spanguard import semconv as sc
from spanguard.attributes import tool_attributes
from spanguard.guardrails.steps import RunState, ToolCall
from spanguard.hashing import payload_hash
from spanguard.mcp_bridge._protocol import error_code
from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation, correlation_from_meta, parent_from_meta
from spanguard.mcp_bridge.gate import STATUS_ERROR, ToolGate, mark_tool_result

__all__ = ["SpanguardToolHandler", "install", "installed"]

logger = logging.getLogger("spanguard.mcp_bridge")


class SpanguardToolHandler:
    """The ``tools/call`` handler spanguard installs in an mcp 1.x server.

    One instance serves every session of the server; the gate keeps guard
    state per MCP session (the caller's hashed session id, else the connection).
    """

    def __init__(self, server: Any, tracer_provider: trace.TracerProvider,
                 gate: ToolGate) -> None:
        self._types: Any = importlib.import_module("mcp.types")
        self._server = server
        self._inner = server.request_handlers[self._types.CallToolRequest]
        self._tracer = tracer_provider.get_tracer("spanguard.mcp_bridge",
                                                  schema_url=sc.SEMCONV_SCHEMA_URL)
        self._runs: weakref.WeakKeyDictionary[Any, RunState] = weakref.WeakKeyDictionary()
        self.gate = gate

    @property
    def tools(self) -> ToolAnnotations:
        """The annotations the server advertised, as the gate's guards see them."""
        return self.gate.tools

    async def __call__(self, request: Any) -> Any:
        params = request.params
        tool: str = params.name
        arguments: Mapping[str, Any] = params.arguments or {}
        meta = params.meta.model_dump(by_alias=True, exclude_none=True) \
            if params.meta is not None else None
        try:
            ctx: Any = self._server.request_context
        except LookupError:  # called outside a request (a test, a direct call)
            ctx = None
        arguments_hash = payload_hash(arguments)
        ids = correlation_from_meta(meta)
        attributes = tool_attributes(tool, arguments_hash=arguments_hash)
        attributes[sc.MCP_METHOD_NAME] = "tools/call"
        if ctx is not None:
            attributes[sc.JSONRPC_REQUEST_ID] = str(ctx.request_id)
            client = getattr(ctx.session, "client_params", None)
            version = getattr(client, "protocolVersion", None)
            if isinstance(version, str):
                attributes[sc.MCP_PROTOCOL_VERSION] = version
        attributes.update(ids.attributes())
        with self._tracer.start_as_current_span(
            f"tools/call {tool}", kind=SpanKind.SERVER, context=parent_from_meta(meta),
            attributes=attributes, record_exception=False, set_status_on_exception=False,
        ) as span:
            try:
                return await self._call(request, tool, arguments, arguments_hash, meta, ids,
                                        ctx, span)
            except Exception as exc:
                # No exception message: for bad params it quotes the caller's input.
                code = error_code(exc)
                span.set_attributes({sc.TOOL_RESULT_STATUS: STATUS_ERROR, sc.ERROR_TYPE:
                                     str(code) if code is not None else type(exc).__qualname__})
                span.set_status(StatusCode.ERROR)
                raise

    async def _call(self, request: Any, tool: str, arguments: Mapping[str, Any],
                    arguments_hash: str, meta: Mapping[str, Any] | None, ids: Correlation,
                    ctx: Any, span: Span) -> Any:
        if not self.gate.active:
            result = await self._inner(request)
            mark_tool_result(span, _wire(result))
            return result
        gate = self.gate
        run = self._run_state(getattr(ctx, "session", None), ids, span)
        if gate.tools.get(tool) is None:  # first call, or a tool added since
            await self._list_tools()
        # No call id: a re-made held call must find its approval by maker and payload.
        call = ToolCall(tool, arguments, annotations=gate.tools.get(tool) or {},
                        arguments_hash=arguments_hash)
        refused = await gate.admit(run, call, span, meta)
        if refused is not None:
            return self._result(refused)
        result = await self._inner(request)
        wire = _wire(result)
        mark_tool_result(span, wire)

        async def read_back(name: str, read_arguments: Mapping[str, Any]) -> Any:
            """Another tool of this server, through its own ``tools/call`` handler."""
            types = self._types
            return _wire(await self._inner(types.CallToolRequest(
                method="tools/call",
                params=types.CallToolRequestParams(name=name, arguments=dict(read_arguments)))))

        settled = await gate.settle(run, call, wire, span, read_back)
        return result if settled is None else self._result(settled)

    def _run_state(self, session: Any, ids: Correlation, span: Span) -> RunState:
        """The caller's conversation (hashed session id), else one run per connection."""
        if ids.session is not None:
            return self.gate.session_run(ids.session, ids, span)
        if session is None:
            return self.gate.start_run(f"mcp-request-{id(span)}", ids, span)
        run = self._runs.get(session)
        if run is None:
            run = self.gate.start_run(f"mcp-connection-{id(session)}", ids, span)
            self._runs[session] = run
            weakref.finalize(session, self.gate.end_run, run)
        return run

    async def _list_tools(self) -> None:
        """Read the tool annotations the server advertises (before a guarded call)."""
        handler = self._server.request_handlers.get(self._types.ListToolsRequest)
        if handler is None:
            return
        try:
            result = await handler(self._types.ListToolsRequest(method="tools/list"))
        except Exception:
            # Guards then see annotations {} ("no hints"), which they must treat as such.
            logger.warning("spanguard: could not list tools for their annotations",
                           exc_info=True)
            return
        self.tools.observe(_wire(result))

    def _result(self, wire: Mapping[str, Any]) -> Any:
        return self._types.ServerResult(self._types.CallToolResult.model_validate(wire))


def installed(server: Any) -> SpanguardToolHandler | None:
    """The handler spanguard installed in ``server`` (``FastMCP`` or ``Server``), if any."""
    lowlevel = getattr(server, "_mcp_server", server)
    types: Any = importlib.import_module("mcp.types")
    current = lowlevel.request_handlers.get(types.CallToolRequest)
    return current if isinstance(current, SpanguardToolHandler) else None


def install(server: Any, tracer_provider: trace.TracerProvider,
            gate: ToolGate) -> SpanguardToolHandler:
    """Wrap the ``tools/call`` handler of ``server`` (``FastMCP`` or low-level ``Server``)."""
    lowlevel = getattr(server, "_mcp_server", server)
    types: Any = importlib.import_module("mcp.types")
    if types.CallToolRequest not in lowlevel.request_handlers:
        raise ValueError("the server has no tools/call handler: register its tools first "
                         "(@server.call_tool() or @mcp.tool()), then call instrument_server")
    handler = SpanguardToolHandler(lowlevel, tracer_provider, gate)
    lowlevel.request_handlers[types.CallToolRequest] = handler
    return handler


def _wire(result: Any) -> dict[str, Any]:
    """The wire form of a handler's ``ServerResult`` (or of the result inside it)."""
    inner = getattr(result, "root", result)
    dump = getattr(inner, "model_dump", None)
    if dump is None:
        return dict(inner) if isinstance(inner, Mapping) else {}
    dumped: dict[str, Any] = dump(by_alias=True, mode="json", exclude_none=True)
    return dumped
