"""The stdio proxy: an MCP server that wraps any MCP server and traces and guards it.

``spanguard mcp wrap -- CMD ARGS...`` starts ``CMD ARGS...`` and pumps
newline-delimited JSON-RPC both ways. It is a gateway: every client frame is
read once, strictly (:mod:`._proxy_admission`), and only what passes is
forwarded, so nothing that could run a tool reaches the server without the
guard seeing it (batches, ``tools/call`` notifications, look-alike methods,
ambiguous or too-deep frames are refused). Forwarded requests are the client's
bytes with the proxy's trace context spliced into ``params._meta``
(:mod:`._proxy_splice`); nothing else is re-encoded. Each client request gets
one SERVER span continuing the caller's trace; ``tools/call`` also passes the
:class:`~spanguard.mcp_bridge.gate.ToolGate` (the same gate as
``instrument_server``), which may answer the client itself instead of
forwarding, and judges the answer before the client sees it.

No request waits behind another: a call whose tool annotations must first be
listed, a held call waiting for its checker, and a verifier's read-back each
run in their own task with their own deadline (``upstream_timeout``), and
``call_timeout`` gives every forwarded request a deadline of its own.

Faults: a dead upstream fails every pending request with a JSON-RPC error that
names the cause, then the proxy exits (or restarts the server and replays the
client's ``initialize``); bad input either way is answered with a JSON-RPC
error naming the reason and the pump goes on; stdin EOF stops the upstream
(close, SIGTERM, SIGKILL).

Why one long module: the pump's state (pending requests, the proxy's own
requests, waiting calls, restarts) is shared by every step of it. What does not
need that state lives apart: framing, admission, the codec and the splice,
messages, span attributes, the tool listing, the upstream process, and the
guardrail gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
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
from spanguard.errors import ConfigError
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
from spanguard.mcp_bridge import _proxy_codec as codec
from spanguard.mcp_bridge import _proxy_spans as spans
from spanguard.mcp_bridge._protocol import PROTOCOL_VERSION_META_KEY, ProtocolError
from spanguard.mcp_bridge._proxy_admission import (
    Batch,
    Notification,
    Refusal,
    Request,
    Response,
    admit,
    batch_answer,
    request_id,
)
from spanguard.mcp_bridge._proxy_framing import (
    CHUNK_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    FrameReader,
    Oversized,
)
from spanguard.mcp_bridge._proxy_listing import ToolListing
from spanguard.mcp_bridge._proxy_messages import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    Message,
    RequestId,
    dumps,
    error_response,
)
from spanguard.mcp_bridge._proxy_setup import SessionSetup
from spanguard.mcp_bridge._proxy_splice import (
    Malformed,
    array_elements,
    deeper_than,
    inject_meta,
    top_level_id,
)
from spanguard.mcp_bridge._proxy_upstream import Upstream, command_identity, describe_exit
from spanguard.mcp_bridge.annotations import ToolAnnotations
from spanguard.mcp_bridge.correlation import Correlation, correlation_from_meta
from spanguard.mcp_bridge.gate import ToolGate, mark_tool_result

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_UPSTREAM_TIMEOUT",
    "MAX_IN_FLIGHT",
    "McpProxy",
    "RestartPolicy",
    "install_signal_handlers",
    "open_stdio",
]

logger = logging.getLogger("spanguard.mcp_bridge.proxy")

_OWN_ID_PREFIX = "spanguard-proxy-"
DEFAULT_UPSTREAM_TIMEOUT = 30.0
"""Seconds the proxy waits for the upstream to answer a request of its own (a tools
listing for annotations, a verifier's read-back, a replayed ``initialize``)."""
MAX_IN_FLIGHT = 4096
"""Client requests the proxy keeps open at once; more are refused (memory stays bounded)."""


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
    deadline: asyncio.TimerHandle | None = None


def _what(entry: _Pending) -> str:
    """The request as a person reads it: ``tools/call 'wipe'``, ``tools/list``."""
    return f"{entry.method} {entry.call.tool!r}" if entry.call is not None else entry.method


class _UpstreamGone(Exception):
    """Raised into waiters when the upstream ended and will not come back."""


class _UpstreamCrashed(ConnectionError):
    """The upstream died with the request pending; a transport failure, maybe retried."""


class _Cancelled(Exception):
    """The client cancelled the request; its span is already closed."""


class _Failed(Exception):
    """The request ends with a JSON-RPC error from the proxy (never retried)."""

    def __init__(self, rpc_code: int, outcome: str, reason: str) -> None:
        self.rpc_code = rpc_code
        self.outcome = outcome
        super().__init__(reason)


class McpProxy:
    """One client session in front of one wrapped server (restarted as needed).

    ``policy`` (a ``Policy``, a TOML path, or None for ``SPANGUARD_POLICY``),
    ``identity`` (the maker of held calls, default the OS user) and
    ``hold_wait`` configure the proxy's :class:`~spanguard.mcp_bridge.gate.ToolGate`;
    ``server_name`` is the server identity approvals are bound to (default: a
    hash of the command line); ``retry`` defaults to the policy's ``[retry]``.
    ``upstream_timeout`` bounds each request the proxy makes itself;
    ``call_timeout`` (None: no deadline) bounds each forwarded client request.
    ``client_writer`` receives protocol frames only.
    """

    def __init__(self, command: Sequence[str], *,
                 tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None,
                 policy: Policy | str | os.PathLike[str] | None = None,
                 identity: str | None = None,
                 hold_wait: float = 0.0,
                 server_name: str | None = None,
                 restart: RestartPolicy = RestartPolicy(),
                 retry: RetryPolicy | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
                 call_timeout: float | None = None) -> None:
        if not upstream_timeout > 0:
            raise ConfigError("upstream_timeout", f"must be more than 0 seconds, got "
                                                  f"{upstream_timeout!r}")
        if call_timeout is not None and not call_timeout > 0:
            raise ConfigError("call_timeout", f"must be more than 0 seconds, got "
                                              f"{call_timeout!r}")
        if server_name is not None and not server_name.strip():
            raise ConfigError("server_name", "must not be empty")
        self._upstream = Upstream(command, CHUNK_BYTES)
        self.server_name = server_name or command_identity(command)
        provider = resolve_tracer_provider(tracer_provider)
        self._tracer: Tracer = provider.get_tracer("spanguard.mcp_bridge.proxy",
                                                   schema_url=sc.SEMCONV_SCHEMA_URL)
        self._setup = SessionSetup(self._tracer)
        gate = ToolGate(policy, tracer_provider=provider, meter_provider=meter_provider,
                        identity=identity, hold_wait=hold_wait, server_name=self.server_name)
        self._gate: ToolGate | None = gate if gate.active else None
        self._run_key = f"mcp-proxy-{os.getpid()}-{id(self)}"
        self._restart = restart
        self._retry = retry or (gate.policy.retry if gate.policy is not None else None) \
            or RetryPolicy()
        self._limit = max_message_bytes
        self._upstream_timeout = upstream_timeout
        self._call_timeout = call_timeout
        self._pending: dict[RequestId, _Pending] = {}
        self._own: dict[str, asyncio.Future[Message]] = {}
        # Random per proxy: a client cannot guess the ids of the proxy's own requests.
        self._own_prefix = f"{_OWN_ID_PREFIX}{secrets.token_hex(4)}-"
        self._own_counter = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Requests not forwarded yet: waiting for annotations or for a checker.
        self._waiting: dict[RequestId, asyncio.Task[None]] = {}
        self._listing = ToolListing(gate.tools, self._own_request, self._spawn)
        self._protocol_version: str | None = None
        self._session_id: str | None = None
        self._init_params: dict[str, Any] | None = None
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
        return self._listing.tools

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
                await self._client_frame(frame)
            except Exception:
                # The last line of defence: a bug here costs one message, not the session.
                logger.exception("could not handle a client message; it was not forwarded")
                rid = request_id(top_level_id(frame))
                if rid is not None and rid not in self._pending and rid not in self._waiting:
                    await self._to_client(error_response(
                        rid, INTERNAL_ERROR, "Internal error: the proxy could not handle this "
                        "request; it was not forwarded"))

    async def _client_frame(self, frame: bytes) -> None:
        admitted = admit(frame)
        if isinstance(admitted, Request):
            await self._client_request(admitted, frame)
        elif isinstance(admitted, Notification):
            self._client_notification(admitted.message, admitted.method)
            await self._to_upstream(frame + b"\n")
        elif isinstance(admitted, Response):
            await self._to_upstream(frame + b"\n")
        elif isinstance(admitted, Batch):
            logger.warning("refused a JSON-RPC batch of %d message(s); none was forwarded",
                           len(admitted.members))
            answer = batch_answer(admitted.members)
            if answer is not None:
                await self._to_client(dumps(answer))
        elif admitted.answer:
            await self._to_client(error_response(admitted.request_id, admitted.code,
                                                 admitted.reason))
        else:
            logger.warning("a client message was not forwarded: %s", admitted.reason)

    async def _client_request(self, request: Request, frame: bytes) -> None:
        rid = request.request_id
        refused = self._in_flight_refusal(rid)
        if refused is not None:
            await self._to_client(error_response(rid, refused.code, refused.reason))
            return
        method = request.method
        params = request.message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if not isinstance(meta, dict):
            meta = None
        parent = None
        if meta is not None:
            with contextlib.suppress(ValueError, TypeError):
                parent = extract(meta)
            version = meta.get(PROTOCOL_VERSION_META_KEY)
            if isinstance(version, str):
                self._protocol_version = version
        target = spans.request_target(method, params)
        attributes = spans.request_attributes(method, rid, self._protocol_version,
                                              self._session_id)
        call: ToolCall | None = None
        ids = Correlation()
        if request.tool is not None and request.arguments is not None:
            # The arguments exactly as the server will read them (admission refused
            # anything ambiguous), so an approval covers what runs and nothing else.
            args_hash = payload_hash(request.arguments)
            attributes.update(spans.tool_call_attributes(request.tool, rid, args_hash))
            ids = correlation_from_meta(meta)
            if ids:
                attributes.update(ids.attributes())
            # No call id: the JSON-RPC id changes when a client re-makes a held call,
            # and the re-made call must find its approval by maker and payload.
            call = ToolCall(request.tool, request.arguments, arguments_hash=args_hash)
        span = self._tracer.start_span(spans.request_span_name(method, target),
                                       self._setup.parent(method, parent),
                                       kind=SpanKind.SERVER, attributes=attributes)
        if call is None or (self._gate is None and not self._restart.enabled):
            await self._forward(request, span, call, frame)
            return
        if self._listing.pending(call.tool):
            # Listing the tools may take up to upstream_timeout: only this call waits.
            self._waiting[rid] = self._spawn(
                self._annotate_then_admit(request, frame, span, call, ids, meta))
            return
        # {} for a tool the server gave no hints for (or that it did not list):
        # None would mean "not classified" and let a high-risk rule pass it.
        call.annotations = self._listing.tools.get(call.tool) or {}
        await self._admit(request, frame, span, call, ids, meta, in_task=False)

    def _in_flight_refusal(self, rid: RequestId) -> Refusal | None:
        if rid in self._pending or rid in self._waiting:
            return Refusal(rid, INVALID_REQUEST, f"Invalid Request: id {rid!r} is already used "
                           "by a request in flight")
        if len(self._pending) + len(self._waiting) >= MAX_IN_FLIGHT:
            return Refusal(rid, INTERNAL_ERROR, f"too many requests in flight (the proxy keeps "
                           f"at most {MAX_IN_FLIGHT}); send it again once some are answered")
        return None

    async def _annotate_then_admit(self, request: Request, frame: bytes, span: Span,
                                   call: ToolCall, ids: Correlation,
                                   meta: Mapping[str, Any] | None) -> None:
        try:
            call.annotations = await self._listing.annotations(call.tool) or {}
            await self._admit(request, frame, span, call, ids, meta, in_task=True)
        except asyncio.CancelledError:
            self._end_cancelled(span, "cancelled before it was forwarded")
            raise
        except Exception as exc:
            await self._not_forwarded(request.request_id, span, exc)
        finally:
            self._waiting.pop(request.request_id, None)

    async def _admit(self, request: Request, frame: bytes, span: Span, call: ToolCall,
                     ids: Correlation, meta: Mapping[str, Any] | None, *,
                     in_task: bool) -> None:
        """The guards' verdict, then forward or answer; a hold wait runs off the pump."""
        run: RunState | None = None
        if self._gate is not None:
            # One run per conversation the caller names (hashed session id), else
            # one for this client connection, as instrument_server keys them.
            run = self._gate.session_run(ids.session or self._run_key, ids, span)
            violation = self._gate.check(run, call, span, meta)
            held = self._gate.waits_for(violation)
            if held is not None and not in_task:
                self._waiting[request.request_id] = self._spawn(
                    self._wait_then_forward(held, request, frame, span, call, run))
                return
            if held is not None:
                violation = await self._decided(held, run, call, span)
            if violation is not None:
                await self._refuse(request.request_id, call, violation, span)
                return
        await self._forward(request, span, call, frame, run)

    async def _decided(self, held: HoldPending, run: RunState, call: ToolCall,
                       span: Span) -> GuardrailViolation | None:
        """``--hold-wait``: wait for the checker, then ask the guards again."""
        assert self._gate is not None
        violation = await self._gate.wait(held)
        return self._gate.check(run, call, span) if violation is None else violation

    async def _wait_then_forward(self, held: HoldPending, request: Request, frame: bytes,
                                 span: Span, call: ToolCall, run: RunState) -> None:
        try:
            violation = await self._decided(held, run, call, span)
            if violation is not None:
                await self._refuse(request.request_id, call, violation, span)
                return
            await self._forward(request, span, call, frame, run)
        except asyncio.CancelledError:
            self._end_cancelled(span, "cancelled while held")
            raise
        except Exception as exc:
            await self._not_forwarded(request.request_id, span, exc)
        finally:
            self._waiting.pop(request.request_id, None)

    async def _not_forwarded(self, rid: RequestId, span: Span, error: Exception) -> None:
        """A waiting call failed in the proxy: it is answered, and never forwarded."""
        if rid in self._pending or not span.is_recording():
            return  # it was forwarded (or answered) before the failure: that answer stands
        logger.error("a waiting request failed before it was forwarded", exc_info=error)
        reason = (f"Internal error: the proxy could not complete the guard's check "
                  f"({type(error).__name__}); the request was not forwarded")
        spans.finish_unanswered(span, "proxy_error", reason)
        span.end()
        await self._to_client(error_response(rid, INTERNAL_ERROR, reason))

    @staticmethod
    def _end_cancelled(span: Span, description: str) -> None:
        if span.is_recording():
            spans.finish_unanswered(span, "cancelled", description)
            span.end()

    async def _refuse(self, rid: RequestId, call: ToolCall, violation: GuardrailViolation,
                      span: Span) -> None:
        assert self._gate is not None
        refusal = self._gate.refuse(call, violation, span)
        span.end()
        await self._to_client(dumps({"jsonrpc": "2.0", "id": rid, "result": refusal}))

    async def _forward(self, request: Request, span: Span, call: ToolCall | None,
                       frame: bytes, run: RunState | None = None) -> None:
        rid, method = request.request_id, request.method
        params = request.message.get("params")
        if method == "initialize" and isinstance(params, dict):
            self._init_params = {k: v for k, v in params.items() if k != "_meta"}
        if self._gone is not None:
            spans.finish_unanswered(span, "upstream_exit", self._gone)
            span.end()
            await self._to_client(error_response(rid, CONNECTION_CLOSED, self._gone))
            return
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        try:
            frame = inject_meta(frame, carrier, request.message)
        except Malformed:  # admission parsed it, so this is a bug: telemetry fails open
            logger.warning("could not add trace context to %s (request %r)", method, rid)
        frame += b"\n"
        entry = _Pending(method, span, call, run)
        self._pending[rid] = entry
        self._arm_deadline(rid, entry)
        if call is not None and self._restart.enabled and \
                tool_retry_allowed(call.annotations)[0]:
            entry.future = asyncio.get_running_loop().create_future()
            await self._to_upstream(frame)
            self._spawn(self._retrying(rid, entry, frame))
            return
        await self._to_upstream(frame)

    def _arm_deadline(self, rid: RequestId, entry: _Pending) -> None:
        if self._call_timeout is not None:
            entry.deadline = asyncio.get_running_loop().call_later(
                self._call_timeout, self._deadline_passed, rid, entry)

    def _deadline_passed(self, rid: RequestId, entry: _Pending) -> None:
        if self._pending.get(rid) is entry:
            self._spawn(self._time_out(rid, entry))

    async def _time_out(self, rid: RequestId, entry: _Pending) -> None:
        """``call_timeout``: answer the client, and tell the server to stop."""
        self._take(rid)
        reason = (f"the upstream did not answer {_what(entry)} (request {rid!r}) within "
                  f"{self._call_timeout:g} s; the proxy cancelled it")
        await self._to_upstream(dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                       "params": {"requestId": rid, "reason": reason}}))
        if entry.future is not None:  # a repeatable tool call: its task answers
            if not entry.future.done():
                entry.future.set_exception(_Failed(REQUEST_TIMEOUT, "timeout", reason))
            return
        await self._fail(rid, entry, _Failed(REQUEST_TIMEOUT, "timeout", reason))

    async def _fail(self, rid: RequestId, entry: _Pending, failure: _Failed) -> None:
        """End the request with the proxy's own JSON-RPC error."""
        if entry.span.is_recording():
            spans.finish_unanswered(entry.span, failure.outcome, str(failure))
            entry.span.end()
        await self._to_client(error_response(rid, failure.rpc_code, str(failure)))

    def _take(self, rid: RequestId) -> _Pending | None:
        """The pending request, removed, its deadline disarmed."""
        entry = self._pending.pop(rid, None)
        if entry is not None and entry.deadline is not None:
            entry.deadline.cancel()
            entry.deadline = None
        return entry

    async def _retrying(self, rid: RequestId, entry: _Pending, frame: bytes) -> None:
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
                self._pending[rid] = entry
                self._arm_deadline(rid, entry)
                await self._to_upstream(frame)
                if self._gone is not None:
                    self._take(rid)
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
        except _Failed as failed:
            span.set_attribute(sc.ATTEMPT_NUMBER, attempts)
            await self._fail(rid, entry, failed)
            return
        except Exception as exc:
            self._take(rid)
            reason = (f"{exc} while handling tools/call (request {rid!r}); "
                      f"gave up after {attempts} attempt(s)")
            if span.is_recording():
                span.set_attribute(sc.ATTEMPT_NUMBER, attempts)
                spans.finish_unanswered(span, "upstream_exit", reason)
                span.end()
            await self._to_client(error_response(rid, CONNECTION_CLOSED, reason))
            return
        span.set_attribute(sc.ATTEMPT_NUMBER, attempts)
        answer = self._finish(rid, entry, message, raw)
        if answer is not None:
            await self._to_client(answer)

    def _client_notification(self, message: Message, method: str) -> None:
        if method == "notifications/initialized":
            self._client_initialized = True
        elif method == "notifications/cancelled":
            params = message.get("params")
            rid = request_id(params.get("requestId")) if isinstance(params, dict) else None
            if rid is None:
                return
            waiting = self._waiting.pop(rid, None)
            if waiting is not None:  # not forwarded yet: it must never run now
                waiting.cancel()
            pending = self._take(rid)
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
            elif frame.strip():
                try:
                    await self._upstream_frame(frame, in_batch=False)
                except Exception:  # a bug here costs one message, not the session
                    logger.exception("could not handle a message from the upstream; "
                                     "dropped: %.200r", frame)

    async def _upstream_frame(self, frame: bytes, *, in_batch: bool) -> None:
        try:
            message = codec.validate(frame)
        except ValueError as exc:
            await self._unreadable(frame, exc)
            return
        if isinstance(message, list) and not in_batch:
            # A JSON-RPC 2.0 server may batch: each message is handled as if it came
            # alone (an answer in a batch is still judged before the client sees it).
            try:
                members = array_elements(frame)
            except Malformed:
                members = []
            for member in members:
                await self._upstream_frame(member, in_batch=True)
            return
        if not isinstance(message, dict):
            logger.warning("upstream wrote a line that is not a JSON-RPC message; dropped: "
                           "%.200r", frame)
        elif "method" in message:
            if message.get("method") == "notifications/tools/list_changed":
                self._listing.changed()
            await self._to_client(frame + b"\n")
        else:
            await self._upstream_answer(message, frame)

    async def _upstream_answer(self, message: Message, frame: bytes) -> None:
        rid = message.get("id")
        if not _is_id(rid):
            if rid is None and "error" in message:
                await self._to_client(frame + b"\n")  # the server could not read something
            else:
                logger.warning("upstream answer without a usable id; dropped: %.200r", frame)
            return
        entry = self._take(rid)
        if entry is None:
            own = self._own.pop(rid, None) if isinstance(rid, str) else None
            if own is not None:
                if not own.done():
                    own.set_result(message)
            else:
                logger.debug("an answer to no request in flight (cancelled, timed out or "
                             "answered before); dropped: %.200r", frame)
            return
        if entry.future is not None:
            if not entry.future.done():
                entry.future.set_result((message, frame))
            return
        answer = self._finish(rid, entry, message, frame)
        if answer is not None:
            await self._to_client(answer)

    async def _unreadable(self, frame: bytes, error: ValueError) -> None:
        """A line from the upstream that is not strict JSON: fail its request, if any."""
        rid = top_level_id(frame)
        entry = self._take(rid) if rid is not None else None
        if rid is None or entry is None:
            own = self._own.pop(rid, None) if isinstance(rid, str) else None
            if own is not None and not own.done():
                own.set_exception(_UpstreamGone(f"unreadable answer ({error})"))
            logger.warning("upstream wrote a line that is not valid JSON; dropped: %.200r",
                           frame)
            return
        why = codec.TooDeep() if deeper_than(frame, codec.MAX_DEPTH) else error
        ran = " (the server may have run the tool)" if entry.call is not None else ""
        failure = _Failed(INTERNAL_ERROR, "invalid_response",
                          f"the upstream's answer to {_what(entry)} (request {rid!r}) could "
                          f"not be read ({why}); it was not passed on{ran}")
        if entry.future is not None:
            if not entry.future.done():
                entry.future.set_exception(failure)
            return
        await self._fail(rid, entry, failure)

    def _finish(self, rid: RequestId, entry: _Pending, message: Message,
                frame: bytes) -> bytes | None:
        """End the request's span from its response; returns the frame to send the client.

        None when a verifier's read-back must run first: a task answers the
        client and ends the span when it is done. A gated call's answer the
        guards cannot judge becomes a JSON-RPC error: it is never passed on unjudged.
        """
        span = entry.span
        handed_off = False
        try:
            if "error" in message:
                spans.finish_error(span, message["error"])
                return frame + b"\n"
            result = message.get("result")
            if not isinstance(result, dict):
                return frame + b"\n"
            if entry.method == "tools/list":
                self._listing.observe(result)
            elif entry.method == "initialize":
                version = result.get("protocolVersion")
                if isinstance(version, str):
                    self._protocol_version = version
            elif entry.call is not None:
                mark_tool_result(span, result)
                # Only a guard that reads results needs them exact (and the rewrite).
                if self._gate is not None and entry.run is not None and \
                        self._gate.reads_results:
                    exact = self._judgeable(entry, frame, message)
                    if self._gate.needs_read_back(entry.call, exact["result"]):
                        self._spawn(self._verify_then_answer(rid, entry, exact))
                        handed_off = True  # the task ends the span
                        return None
                    settled = self._gate.settle_now(entry.run, entry.call, exact["result"],
                                                    span)
                    if settled is not None:
                        exact["result"] = settled
                        return dumps(exact)
            return frame + b"\n"
        except _Failed as failed:
            spans.finish_unanswered(span, failed.outcome, str(failed))
            return error_response(rid, failed.rpc_code, str(failed))
        except Exception as exc:
            return self._internal_error(rid, entry, exc)
        finally:
            if not handed_off:
                span.end()

    def _internal_error(self, rid: RequestId, entry: _Pending, exc: Exception) -> bytes:
        logger.error("could not process the upstream's answer to %s (request %r)",
                     entry.method, rid, exc_info=exc)
        reason = (f"the proxy could not process the upstream's answer to {_what(entry)} "
                  f"({type(exc).__name__}); it was not passed on")
        spans.finish_unanswered(entry.span, "proxy_error", reason)
        return error_response(rid, INTERNAL_ERROR, reason)

    @staticmethod
    def _judgeable(entry: _Pending, frame: bytes, message: Message) -> Message:
        """The exact reading of a gated call's answer, for the guards and the rewrite."""
        prefix = f"the upstream's answer to {_what(entry)}"
        if codec.nesting_exceeds(frame, message):
            raise _Failed(INTERNAL_ERROR, "invalid_response",
                          f"{prefix} is {codec.TooDeep()}: the guards cannot judge it, so "
                          "it was not passed on (the tool did run)")
        try:
            exact: Message = codec.loads(frame)
        except codec.DuplicateKey as exc:
            raise _Failed(INTERNAL_ERROR, "invalid_response",
                          f"{prefix} has a {exc}: clients disagree on which one counts, so "
                          "it was not passed on (the tool did run)") from exc
        return exact

    async def _verify_then_answer(self, rid: RequestId, entry: _Pending,
                                  message: Message) -> None:
        """Read back through the upstream, let the guards judge, then answer."""
        assert self._gate is not None and entry.call is not None and entry.run is not None
        try:
            settled = await self._gate.settle(entry.run, entry.call, message["result"],
                                              entry.span, self._read_back)
            if settled is not None:
                message["result"] = settled
            answer = dumps(message)
        except Exception as exc:
            answer = self._internal_error(rid, entry, exc)
        finally:
            entry.span.end()
        await self._to_client(answer)

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

    async def _own_request(self, method: str, params: Message) -> Message:
        """A request of the proxy's own, with its own deadline (``upstream_timeout``)."""
        self._own_counter += 1
        rid = f"{self._own_prefix}{self._own_counter}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._own[rid] = future
        if not await self._upstream.write(dumps(
                {"jsonrpc": "2.0", "id": rid, "method": method, "params": params})):
            self._own.pop(rid, None)
            raise _UpstreamGone("upstream stdin closed")
        try:
            return await asyncio.wait_for(future, self._upstream_timeout)
        except asyncio.TimeoutError:
            await self._upstream.write(dumps({
                "jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": rid, "reason": "spanguard: no answer within "
                                                      f"{self._upstream_timeout:g} s"}}))
            raise
        finally:
            self._own.pop(rid, None)

    # --- faults -------------------------------------------------------------------

    async def _reject_oversized(self, frame: Oversized, source: str) -> None:
        rid = frame.request_id()
        reason = (f"message of {frame.size} bytes from the {source} exceeds the proxy's "
                  f"limit of {self._limit} bytes; it was dropped")
        logger.warning(reason)
        if source == "upstream":
            entry = self._take(rid) if rid is not None else None
            if rid is None or entry is None:
                return
            # The request was fine; the answer was not: not "Invalid Request".
            failure = _Failed(INTERNAL_ERROR, "oversized_response", reason)
            if entry.future is not None:
                if not entry.future.done():
                    entry.future.set_exception(failure)
                return
            await self._fail(rid, entry, failure)
            return
        await self._to_client(error_response(rid, INVALID_REQUEST, reason))

    async def _fail_pending(self, cause: str) -> None:
        pending = list(self._pending)
        for rid in pending:
            entry = self._take(rid)
            if entry is None:
                continue
            message = f"{cause} while handling {entry.method} (request {rid!r})"
            if entry.future is not None:  # a repeatable tool call: its task decides
                if not entry.future.done():
                    entry.future.set_exception(_UpstreamCrashed(message))
                continue
            if entry.call is not None:
                message = self._not_retried(entry.call, message)
            spans.finish_unanswered(entry.span, "upstream_exit", message)
            entry.span.end()
            await self._to_client(error_response(rid, CONNECTION_CLOSED, message))

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
        for rid in list(self._pending):
            entry = self._take(rid)
            if entry is not None and entry.span.is_recording():
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
        self._listing.changed()
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


def _is_id(value: object) -> TypeGuard[RequestId]:
    return isinstance(value, int | str) and not isinstance(value, bool)


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
