"""The stdio proxy: an MCP server that wraps any MCP server and traces and guards it.

``spanguard mcp wrap -- CMD ARGS...`` starts ``CMD ARGS...`` and pumps
newline-delimited JSON-RPC both ways. It is transparent by construction: every
message is forwarded as the bytes that arrived, except client requests, which
get the proxy's trace context in ``params._meta`` (so the server's own spans,
if it has any, continue the trace). Each client request gets one SERVER span
continuing the caller's trace from ``params._meta``; ``tools/call`` also passes
the :class:`~spanguard.mcp_bridge.gate.ToolGate` (the same gate as
``instrument_server``), which may answer the client itself instead of
forwarding, and judges the answer before the client sees it.

Each line is parsed once (orjson) and only requests are re-serialized; no
message goes through pydantic, which would cost more than the hop itself.

Faults: a dead upstream fails every pending request with a JSON-RPC error that
names the cause, then the proxy exits (or restarts the server and replays the
client's ``initialize``); bad client input is answered with a JSON-RPC error
and the pump goes on; stdin EOF stops the upstream (close, SIGTERM, SIGKILL).

Why one long module: the pump's state (pending requests, the proxy's own
requests, held calls, restarts) is shared by every step of it. What does not
need that state lives apart: framing, messages, span attributes, the upstream
process, and the guardrail gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from opentelemetry import metrics, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, Tracer

from spanguard import semconv as sc
from spanguard.config import resolve_tracer_provider
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.holds import HoldPending
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.retry import (
    RetryPolicy,
    ToolCallNotRetried,
    aretry_tool_call,
    tool_retry_allowed,
)
from spanguard.guardrails.steps import RunState, ToolCall
from spanguard.guardrails.transient import error_type_name
from spanguard.hashing import payload_hash
from spanguard.mcp_bridge import _proxy_spans as spans
from spanguard.mcp_bridge._protocol import (
    INTERNAL_ERROR,
    PROTOCOL_VERSION_META_KEY,
    ProtocolError,
)
from spanguard.mcp_bridge._proxy_framing import (
    CHUNK_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    FrameReader,
    Oversized,
)
from spanguard.mcp_bridge._proxy_messages import (
    CONNECTION_CLOSED,
    INVALID_REQUEST,
    PARSE_ERROR,
    Message,
    RequestId,
    dumps,
    error_response,
    loads,
)
from spanguard.mcp_bridge._proxy_setup import SessionSetup
from spanguard.mcp_bridge._proxy_upstream import Upstream, describe_exit
from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation, correlation_from_meta
from spanguard.mcp_bridge.gate import ToolGate, mark_tool_result

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "McpProxy",
    "RestartPolicy",
    "install_signal_handlers",
    "open_stdio",
]

logger = logging.getLogger("spanguard.mcp_bridge.proxy")

_OWN_ID_PREFIX = "spanguard-proxy-"
_OWN_REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class RestartPolicy:
    """How often a crashed upstream is restarted before the proxy gives up."""

    enabled: bool = False
    max_restarts: int = 5
    window_seconds: float = 60.0
    backoff_seconds: float = 0.2


@dataclass(slots=True)
class _Pending:
    method: str
    span: Span
    call: ToolCall | None = None
    run: RunState | None = None
    # Set while a task awaits the answer (a repeatable tool call): it gets
    # (message, frame), or the transport failure that may be retried.
    future: asyncio.Future[tuple[Message, bytes]] | None = None


class _UpstreamGone(Exception):
    """Raised into waiters when the upstream ended and will not come back."""


class _UpstreamCrashed(ConnectionError):
    """The upstream died with the request pending; a transport failure, maybe retried."""


class _Cancelled(Exception):
    """The client cancelled the request; its span is already closed."""


class McpProxy:
    """One client session in front of one wrapped server (restarted as needed).

    ``policy`` (a ``Policy``, a TOML path, or None for ``SPANGUARD_POLICY``),
    ``identity`` (the maker of held calls, default the OS user) and
    ``hold_wait`` configure the proxy's :class:`~spanguard.mcp_bridge.gate.ToolGate`;
    ``retry`` defaults to the policy's ``[retry]``. ``client_writer`` receives
    protocol frames only.
    """

    def __init__(self, command: Sequence[str], *,
                 tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None,
                 policy: Policy | str | os.PathLike[str] | None = None,
                 identity: str | None = None,
                 hold_wait: float = 0.0,
                 restart: RestartPolicy = RestartPolicy(),
                 retry: RetryPolicy | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._upstream = Upstream(command, CHUNK_BYTES)
        provider = resolve_tracer_provider(tracer_provider)
        self._tracer: Tracer = provider.get_tracer("spanguard.mcp_bridge.proxy",
                                                   schema_url=sc.SEMCONV_SCHEMA_URL)
        self._setup = SessionSetup(self._tracer)
        gate = ToolGate(policy, tracer_provider=provider, meter_provider=meter_provider,
                        identity=identity, hold_wait=hold_wait)
        self._gate: ToolGate | None = gate if gate.active else None
        self._tools: ToolAnnotations = gate.tools
        self._run_key = f"mcp-proxy-{os.getpid()}-{id(self)}"
        self._restart = restart
        self._retry = retry or (gate.policy.retry if gate.policy is not None else None) \
            or RetryPolicy()
        self._limit = max_message_bytes
        self._pending: dict[RequestId, _Pending] = {}
        self._own: dict[str, asyncio.Future[Message]] = {}
        self._own_counter = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[RequestId, asyncio.Task[None]] = {}
        self._tools_listed = False
        self._protocol_version: str | None = None
        self._session_id: str | None = None
        self._init_params: dict[str, Any] | None = None
        self._init_id: RequestId | None = None
        self._client_initialized = False
        self._ready = asyncio.Event()
        self._gone: str | None = None
        self._closing = False
        self._restarts: list[float] = []
        self._client: asyncio.StreamWriter | None = None
        self._client_task: asyncio.Task[None] | None = None

    @property
    def upstream_pid(self) -> int | None:
        return self._upstream.pid

    @property
    def annotations(self) -> ToolAnnotations:
        """The upstream's tool annotations, as its ``tools/list`` answers gave them."""
        return self._tools

    async def run(self, client_reader: asyncio.StreamReader,
                  client_writer: asyncio.StreamWriter) -> int:
        """Pump until the client disconnects (0) or the upstream is gone for good (1)."""
        self._client = client_writer
        await self._upstream.start()
        from_client = asyncio.create_task(self._pump_client(client_reader), name="from-client")
        from_upstream = asyncio.create_task(self._pump_upstream(), name="from-upstream")
        self._client_task = from_client
        try:
            await asyncio.wait({from_client, from_upstream},
                               return_when=asyncio.FIRST_COMPLETED)
            if from_client.done():
                self._closing = True
                await self._upstream.stop()
                await from_upstream
                self._close_pending("client_disconnected",
                                    "the client disconnected before the response")
                exit_code = 0
            else:
                exit_code = 1
                from_client.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await from_client
            for task in (from_client, from_upstream):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self._closing = True
            if self._gate is not None:
                self._gate.close()
            for task in (from_client, from_upstream, *self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._upstream.stop()
            self._close_pending("proxy_stopped", "the proxy stopped")
            self._setup.close()
            with contextlib.suppress(Exception):
                client_writer.close()
        return exit_code

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Work that must not hold up the pump (a hold wait, a retry, a read-back)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("proxy task failed", exc_info=task.exception())

    def shutdown(self) -> None:
        """Stop as on a client EOF (signal handlers call this): the upstream is stopped too."""
        if self._client_task is not None:
            self._client_task.cancel()

    # --- client -> upstream -----------------------------------------------------

    async def _pump_client(self, reader: asyncio.StreamReader) -> None:
        frames = FrameReader(reader, self._limit)
        while not self._closing:
            frame = await frames.next()
            if frame is None:
                return
            if isinstance(frame, Oversized):
                await self._reject_oversized(frame, "client")
                continue
            if not frame.strip():
                continue
            try:
                message = loads(frame)
            except ValueError as exc:
                await self._to_client(error_response(None, PARSE_ERROR, f"Parse error: {exc}"))
                continue
            if not isinstance(message, dict):
                # JSON-RPC batches were removed from MCP (2025-06-18); pass arrays on
                # untouched and let the server answer; anything else is not JSON-RPC.
                if isinstance(message, list):
                    await self._to_upstream(frame + b"\n")
                else:
                    await self._to_client(error_response(
                        None, INVALID_REQUEST, "Invalid Request: not a JSON-RPC message"))
                continue
            method = message.get("method")
            if isinstance(method, str) and "id" in message:
                await self._client_request(message, method, frame)
            elif isinstance(method, str):
                self._client_notification(message, method)
                await self._to_upstream(frame + b"\n")
            elif "id" in message and ("result" in message or "error" in message):
                await self._to_upstream(frame + b"\n")
            else:
                await self._to_client(error_response(
                    message.get("id") if _valid_id(message.get("id")) else None,
                    INVALID_REQUEST, "Invalid Request: neither a request, a notification "
                    "nor a response"))

    async def _client_request(self, message: Message, method: str, frame: bytes) -> None:
        request_id = message["id"]
        if not _valid_id(request_id):
            await self._to_client(error_response(
                None, INVALID_REQUEST, "Invalid Request: id must be a string or a number"))
            return
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        parent = None
        if isinstance(meta, dict):
            with contextlib.suppress(ValueError, TypeError):
                parent = extract(meta)
            version = meta.get(PROTOCOL_VERSION_META_KEY)
            if isinstance(version, str):
                self._protocol_version = version
        target = spans.request_target(method, params)
        attributes = spans.request_attributes(method, request_id, self._protocol_version,
                                              self._session_id)
        call: ToolCall | None = None
        ids = Correlation()
        if method == "tools/call" and target is not None and isinstance(params, dict):
            raw_args = params.get("arguments")
            arguments = raw_args if isinstance(raw_args, dict) else {}
            args_hash = payload_hash(arguments)
            attributes.update(spans.tool_call_attributes(target, request_id, args_hash))
            ids = correlation_from_meta(meta if isinstance(meta, dict) else None)
            if ids:
                attributes.update(ids.attributes())
            # No call id: the JSON-RPC id changes when a client re-makes a held call,
            # and the re-made call must find its approval by maker and payload.
            call = ToolCall(target, arguments, arguments_hash=args_hash)
        span = self._tracer.start_span(spans.request_span_name(method, target),
                                       self._setup.parent(method, parent),
                                       kind=SpanKind.SERVER, attributes=attributes)
        if call is not None and (self._gate is not None or self._restart.enabled):
            # {} for a tool the server gave no hints for (or that it did not list):
            # None would mean "not classified" and let a high-risk rule pass it.
            call.annotations = await self._tool_annotations(call.tool) or {}
        run: RunState | None = None
        if call is not None and self._gate is not None:
            # One run per conversation the caller names (hashed session id), else
            # one for this client connection, as instrument_server keys them.
            run = self._gate.session_run(ids.session or self._run_key, ids, span)
            violation = self._gate.check(run, call, span, meta if isinstance(meta, dict)
                                         else None)
            if violation is not None:
                held = self._gate.waits_for(violation)
                if held is None:
                    await self._refuse(request_id, call, violation, span)
                    return
                self._held[request_id] = self._spawn(self._wait_then_forward(
                    held, message, request_id, method, span, call, run, frame))
                return
        await self._forward(message, request_id, method, span, call, frame, run)

    async def _refuse(self, request_id: RequestId, call: ToolCall,
                      violation: GuardrailViolation, span: Span) -> None:
        assert self._gate is not None
        refusal = self._gate.refuse(call, violation, span)
        span.end()
        await self._to_client(dumps({"jsonrpc": "2.0", "id": request_id, "result": refusal}))

    async def _wait_then_forward(self, held: HoldPending, message: Message,
                                 request_id: RequestId, method: str, span: Span,
                                 call: ToolCall, run: RunState, frame: bytes) -> None:
        """``--hold-wait``: wait for the checker off the pump, then ask the guards again."""
        assert self._gate is not None
        try:
            violation = await self._gate.wait(held)
            if violation is None:
                violation = self._gate.check(run, call, span)
            if violation is not None:
                await self._refuse(request_id, call, violation, span)
                return
            await self._forward(message, request_id, method, span, call, frame, run)
        except asyncio.CancelledError:
            if span.is_recording():
                spans.finish_unanswered(span, "cancelled", "cancelled while held")
                span.end()
            raise
        finally:
            self._held.pop(request_id, None)

    async def _forward(self, message: Message, request_id: RequestId, method: str,
                       span: Span, call: ToolCall | None, frame: bytes,
                       run: RunState | None = None) -> None:
        params = message.get("params")
        if method == "initialize" and isinstance(params, dict):
            self._init_params = {k: v for k, v in params.items() if k != "_meta"}
            self._init_id = request_id
        if self._gone is not None:
            spans.finish_unanswered(span, "upstream_exit", self._gone)
            span.end()
            await self._to_client(error_response(request_id, CONNECTION_CLOSED, self._gone))
            return
        if isinstance(params, dict) or params is None:
            if params is None:
                params = message["params"] = {}
            meta = params.get("_meta")
            if not isinstance(meta, dict):
                meta = params["_meta"] = {}
            inject(meta, context=trace.set_span_in_context(span))
            frame = dumps(message)
        else:
            frame += b"\n"
        entry = _Pending(method, span, call, run)
        self._pending[request_id] = entry
        if call is not None and self._restart.enabled and \
                tool_retry_allowed(call.annotations)[0]:
            entry.future = asyncio.get_running_loop().create_future()
            await self._to_upstream(frame)
            self._spawn(self._retrying(request_id, entry, frame))
            return
        await self._to_upstream(frame)

    async def _retrying(self, request_id: RequestId, entry: _Pending, frame: bytes) -> None:
        """Await a repeatable tool call's answer; re-send it if the upstream restarts.

        The retry policy and the rule of which tools may be repeated are the
        guardrails' (:func:`~spanguard.guardrails.aretry_tool_call`); this only
        re-sends the same frame and carries the answer to the client.
        """
        call = entry.call
        assert call is not None and entry.future is not None
        span = entry.span
        attempts = 0

        async def attempt() -> tuple[Message, bytes]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # the first one was sent by _forward, in order
                entry.future = asyncio.get_running_loop().create_future()
                self._pending[request_id] = entry
                await self._to_upstream(frame)
                if self._gone is not None:
                    self._pending.pop(request_id, None)
                    raise _UpstreamGone(self._gone)
            assert entry.future is not None
            return await entry.future

        def on_retry(number: int, error: BaseException, wait: float) -> None:
            span.add_event(sc.TOOL_RETRY_EVENT, {
                sc.ATTEMPT_NUMBER: number, sc.ERROR_TYPE: error_type_name(error),
                sc.RETRY_WAIT_SECONDS: wait, sc.RETRY_REASON: str(error)[:200]})

        try:
            message, raw = await aretry_tool_call(attempt, call.annotations, self._retry,
                                                  tool=call.tool, on_retry=on_retry)
        except _Cancelled:
            return
        except asyncio.CancelledError:
            if span.is_recording():
                spans.finish_unanswered(span, "proxy_stopped", "the proxy stopped")
                span.end()
            raise
        except Exception as exc:
            self._pending.pop(request_id, None)
            reason = (f"{exc} while handling tools/call (request {request_id!r}); "
                      f"gave up after {attempts} attempt(s)")
            if span.is_recording():
                span.set_attribute(sc.ATTEMPT_NUMBER, attempts)
                spans.finish_unanswered(span, "upstream_exit", reason)
                span.end()
            await self._to_client(error_response(request_id, CONNECTION_CLOSED, reason))
            return
        span.set_attribute(sc.ATTEMPT_NUMBER, attempts)
        answer = self._finish(entry, message, raw)
        if answer is not None:
            await self._to_client(answer + b"\n")

    def _client_notification(self, message: Message, method: str) -> None:
        if method == "notifications/initialized":
            self._client_initialized = True
        elif method == "notifications/cancelled":
            params = message.get("params")
            request_id = params.get("requestId") if isinstance(params, dict) else None
            if not _valid_id(request_id):
                return
            held = self._held.pop(request_id, None)
            if held is not None:  # waiting for a checker: it must never run now
                held.cancel()
            pending = self._pending.pop(request_id, None)
            if pending is not None:
                # The server may never answer a cancelled request: close the span now.
                spans.finish_unanswered(pending.span, "cancelled", "cancelled by the client")
                pending.span.end()
                if pending.future is not None and not pending.future.done():
                    pending.future.set_exception(_Cancelled())

    async def _to_upstream(self, frame: bytes) -> None:
        while not self._ready.is_set():
            if self._gone is not None:
                return
            await self._ready.wait()
        if not await self._upstream.write(frame):
            logger.debug("upstream stdin closed; frame dropped (pending requests fail on exit)")

    # --- upstream -> client -----------------------------------------------------

    async def _pump_upstream(self) -> None:
        restarted = False
        while True:
            handshake: asyncio.Task[None] | None = None
            if restarted:
                handshake = asyncio.create_task(self._replay_handshake())
            else:
                self._ready.set()
            await self._read_upstream(self._upstream.stdout)
            self._ready.clear()
            returncode = await self._upstream.wait()
            if handshake is not None:
                handshake.cancel()
            if self._closing:
                return
            cause = describe_exit(self._upstream.display, returncode)
            self._fail_own(cause)
            await self._fail_pending(cause)
            restarted = await self._restart_upstream(cause)
            if not restarted:
                self._gone = cause
                self._ready.set()
                return

    async def _read_upstream(self, reader: asyncio.StreamReader) -> None:
        frames = FrameReader(reader, self._limit)
        while True:
            frame = await frames.next()
            if frame is None:
                return
            if isinstance(frame, Oversized):
                await self._reject_oversized(frame, "upstream")
                continue
            try:
                message = loads(frame)
            except ValueError:
                if frame.strip():
                    logger.warning("upstream wrote a non-JSON line to stdout; dropped: %.200r",
                                   frame)
                continue
            if isinstance(message, dict) and "method" not in message:
                request_id = message.get("id")
                if _valid_id(request_id):
                    entry = self._pending.pop(request_id, None)
                    if entry is not None and entry.future is not None:
                        if not entry.future.done():
                            entry.future.set_result((message, frame))
                        continue
                    if entry is not None:
                        answer = self._finish(entry, message, frame)
                        if answer is None:
                            continue
                        frame = answer
                    elif isinstance(request_id, str) and request_id in self._own:
                        self._own.pop(request_id).set_result(message)
                        continue
            elif isinstance(message, dict) and message.get("method") == \
                    "notifications/tools/list_changed":
                self._tools_listed = False
            await self._to_client(frame + b"\n")

    def _finish(self, entry: _Pending, message: Message, frame: bytes) -> bytes | None:
        """End the request's span from its response; returns the frame to forward.

        None when a verifier's read-back must run first: a task answers the
        client and ends the span when it is done.
        """
        span = entry.span
        handed_off = False
        try:
            if "error" in message:
                spans.finish_error(span, message["error"])
                return frame
            result = message.get("result")
            if not isinstance(result, dict):
                return frame
            if entry.method == "tools/list":
                self._remember_tools(result)
            elif entry.method == "initialize":
                version = result.get("protocolVersion")
                if isinstance(version, str):
                    self._protocol_version = version
            elif entry.call is not None:
                mark_tool_result(span, result)
                if self._gate is not None and entry.run is not None:
                    if self._gate.needs_read_back(entry.call, result):
                        self._spawn(self._verify_then_answer(entry, message))
                        handed_off = True  # the task ends the span
                        return None
                    settled = self._gate.settle_now(entry.run, entry.call, result, span)
                    if settled is not None:
                        message["result"] = settled
                        return dumps(message)[:-1]
            return frame
        finally:
            if not handed_off:
                span.end()

    async def _verify_then_answer(self, entry: _Pending, message: Message) -> None:
        """Read back through the upstream, let the guards judge, then answer."""
        assert self._gate is not None and entry.call is not None and entry.run is not None
        try:
            settled = await self._gate.settle(entry.run, entry.call, message["result"],
                                              entry.span, self._read_back)
            if settled is not None:
                message["result"] = settled
            await self._to_client(dumps(message))
        finally:
            entry.span.end()

    async def _read_back(self, tool: str, arguments: Mapping[str, Any]) -> Any:
        """A verifier's read-back: a hidden ``tools/call`` to the upstream (own request
        id), continuing the trace of the read-back span the gate made current."""
        meta: Message = {}
        inject(meta)
        response = await self._own_request(
            "tools/call", {"name": tool, "arguments": dict(arguments), "_meta": meta})
        error = response.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            text = error.get("message") if isinstance(error, dict) else None
            raise ProtocolError(code if isinstance(code, int) else INTERNAL_ERROR,
                                text if isinstance(text, str) else f"read-back {tool} failed")
        return response.get("result")

    def _remember_tools(self, result: Message) -> None:
        self._tools.observe(result)
        if result.get("nextCursor") is None:
            self._tools_listed = True

    async def _tool_annotations(self, tool: str) -> Mapping[str, Any] | None:
        """The tool's annotations; lists the upstream's tools first if they are unknown.

        A client may call a tool it never listed; a policy keyed on
        ``destructiveHint`` must still see the hint, so the proxy asks itself.
        """
        if self._tools.get(tool) is None and not self._tools_listed:
            cursor: str | None = None
            while True:
                params = {"cursor": cursor} if cursor else {}
                try:
                    response = await self._own_request("tools/list", params)
                except (asyncio.TimeoutError, _UpstreamGone) as exc:
                    logger.warning("could not list upstream tools for annotations: %r", exc)
                    break
                result = response.get("result")
                if not isinstance(result, dict):
                    break
                self._remember_tools(result)
                cursor = result.get("nextCursor")
                if not isinstance(cursor, str):
                    break
        return self._tools.get(tool)

    async def _own_request(self, method: str, params: Message) -> Message:
        self._own_counter += 1
        request_id = f"{_OWN_ID_PREFIX}{self._own_counter}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._own[request_id] = future
        frame = dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        if not await self._upstream.write(frame):
            self._own.pop(request_id, None)
            raise _UpstreamGone("upstream stdin closed")
        try:
            return await asyncio.wait_for(future, _OWN_REQUEST_TIMEOUT)
        finally:
            self._own.pop(request_id, None)

    # --- faults -------------------------------------------------------------------

    async def _reject_oversized(self, frame: Oversized, source: str) -> None:
        request_id = frame.request_id()
        reason = (f"message of {frame.size} bytes from the {source} exceeds the proxy's "
                  f"limit of {self._limit} bytes; it was dropped")
        logger.warning(reason)
        if source == "upstream":
            entry = self._pending.pop(request_id, None) if request_id is not None else None
            if entry is None:
                return
            spans.finish_unanswered(entry.span, "oversized_response", reason)
            entry.span.end()
        await self._to_client(error_response(request_id, INVALID_REQUEST, reason))

    async def _fail_pending(self, cause: str) -> None:
        pending, self._pending = self._pending, {}
        for request_id, entry in pending.items():
            message = f"{cause} while handling {entry.method} (request {request_id!r})"
            if entry.future is not None:  # a repeatable tool call: its task decides
                if not entry.future.done():
                    entry.future.set_exception(_UpstreamCrashed(message))
                continue
            if entry.call is not None:
                message = self._not_retried(entry.call, message)
            spans.finish_unanswered(entry.span, "upstream_exit", message)
            entry.span.end()
            await self._to_client(error_response(request_id, CONNECTION_CLOSED, message))

    def _not_retried(self, call: ToolCall, message: str) -> str:
        """Why a tool call that died with the upstream is not repeated."""
        allowed, why = tool_retry_allowed(call.annotations)
        if allowed:
            return f"{message}; not retried: the proxy restarts the server only with " \
                   "--restart-on-crash"
        if call.annotations is None:
            why = "its annotations are unknown (the proxy reads them with a policy or " \
                  "--restart-on-crash), so it is treated as non-idempotent"
        return str(ToolCallNotRetried(call.tool, why, _UpstreamCrashed(message)))

    def _fail_own(self, cause: str) -> None:
        own, self._own = self._own, {}
        for future in own.values():
            if not future.done():
                future.set_exception(_UpstreamGone(cause))

    def _close_pending(self, outcome: str, description: str) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.span.is_recording():
                spans.finish_unanswered(entry.span, outcome, description)
                entry.span.end()

    async def _restart_upstream(self, cause: str) -> bool:
        policy = self._restart
        if not policy.enabled:
            logger.error("%s; exiting (use --restart-on-crash to restart it)", cause)
            return False
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < policy.window_seconds]
        if len(self._restarts) >= policy.max_restarts:
            logger.error("%s; %d restarts within %.0f s, giving up", cause,
                         len(self._restarts), policy.window_seconds)
            return False
        await asyncio.sleep(policy.backoff_seconds * 2 ** len(self._restarts))
        self._restarts.append(time.monotonic())
        logger.warning("%s; restarting it", cause)
        self._upstream = Upstream(self._upstream.command, CHUNK_BYTES)
        await self._upstream.start()
        return True

    async def _replay_handshake(self) -> None:
        """Re-send the client's ``initialize`` (and ``initialized``) to a restarted server."""
        try:
            if self._init_params is not None:
                response = await self._own_request("initialize", self._init_params)
                if "error" in response:
                    logger.error("restarted upstream refused initialize: %s",
                                 response["error"])
                if self._client_initialized:
                    await self._upstream.write(dumps(
                        {"jsonrpc": "2.0", "method": "notifications/initialized"}))
        except (asyncio.TimeoutError, _UpstreamGone) as exc:
            logger.error("restarted upstream did not complete initialize: %r", exc)
        finally:
            self._ready.set()

    # --- output -------------------------------------------------------------------

    async def _to_client(self, frame: bytes) -> None:
        client = self._client
        if client is None or client.is_closing():
            return
        try:
            client.write(frame)
            await client.drain()
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client stdout closed")


def _valid_id(value: object) -> TypeGuard[RequestId]:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


async def open_stdio() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The proxy's own stdin/stdout as asyncio streams, with fd 1 made safe.

    The protocol stream gets a private duplicate of stdout, and fd 1 itself is
    pointed at stderr: a stray ``print`` from any library lands in the logs, not
    in the middle of the JSON-RPC stream.
    """
    loop = asyncio.get_running_loop()
    protocol_fd = os.dup(sys.stdout.fileno())
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    reader = asyncio.StreamReader(limit=CHUNK_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0))
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(protocol_fd, "wb", buffering=0))
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return reader, writer


def install_signal_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM/SIGINT stop the proxy like a client EOF (the upstream is stopped too)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
