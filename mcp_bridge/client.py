"""The client side: each MCP request carries the caller's trace context in ``_meta``.

mcp 2.x's ``ClientSession`` injects the current context (``traceparent``,
``tracestate``, ``baggage``) into every request's ``params._meta`` itself. mcp 1.x
sends none, so a server (or ``spanguard mcp wrap``) starts a new trace per call.
Three ways to fix that, on either major:

- :func:`outgoing_meta` is the ``_meta`` for one call:
  ``session.call_tool(name, args, meta=outgoing_meta())``.
- :func:`propagate_context` makes one 1.x ``ClientSession`` inject on every
  request it sends (a 2.x session is returned as it is).
- :func:`propagate_requests` covers every request sent inside a block, from any
  session, including ones a library opens where the caller cannot reach them
  (``langchain-mcp-adapters`` opens a session per tool call). With mcp 1.x it
  installs, once, a hook on ``ClientSession.send_request`` that is inert outside
  such a block; with 2.x the SDK's own injection does the work.

Besides the trace context, the requests carry the hashed correlation ids
(:mod:`spanguard.mcp_bridge.correlation`) of the current :func:`spanguard.run_context`
(the LangChain handler publishes its run's ids there while a tool runs), unless
a :func:`~spanguard.mcp_bridge.correlation.correlation` block already set them.
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import baggage, context, propagate
from opentelemetry.context import Context

from spanguard.mcp_bridge._sdk import sdk_major
from spanguard.mcp_bridge.correlation import BAGGAGE_KEYS
from spanguard.runcontext import current_run_context

__all__ = ["outgoing_meta", "propagate_context", "propagate_requests"]

SessionT = TypeVar("SessionT")

_PROPAGATING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "spanguard_mcp_propagating", default=False)
_MARK = "__spanguard_propagates__"  # on a session's own send_request
_HOOK_MARK = "__spanguard_hook__"  # on the 1.x ClientSession class's


def outgoing_meta(meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``meta`` plus the current trace context, baggage and run correlation ids.

    For one request: ``session.call_tool(name, arguments, meta=outgoing_meta())``.
    Entries already in ``meta`` under the W3C keys are replaced by the current
    context's, as mcp 2.x's own injection does.
    """
    carrier = dict(meta or {})
    propagate.inject(carrier, context=_with_run_correlation(context.get_current()))
    return carrier


def propagate_context(session: SessionT) -> SessionT:
    """Make an mcp 1.x ``ClientSession`` send the trace context with every request.

    Requests without params (``ping``, ``tools/list`` without a cursor) go as
    they are. A 2.x session already does this and is returned unchanged;
    calling it twice changes nothing.
    """
    if (sdk_major() or 0) >= 2:
        return session
    send = getattr(session, "send_request", None)
    if send is None or getattr(send, _MARK, False):
        return session

    async def send_request(request: Any, *args: Any, **kwargs: Any) -> Any:
        return await send(_with_meta(request), *args, **kwargs)

    setattr(send_request, _MARK, True)
    setattr(session, "send_request", send_request)  # noqa: B010 (an instance attribute)
    return session


@contextmanager
def propagate_requests() -> Iterator[None]:
    """Every MCP request sent inside the block carries the caller's context.

    Any session, on either SDK major (see the module docstring); the run
    correlation ids are added to the baggage for the block's duration.
    """
    if (sdk_major() or 0) < 2:
        _install_session_hook()
    token = context.attach(_with_run_correlation(context.get_current()))
    flag = _PROPAGATING.set(True)
    try:
        yield
    finally:
        _PROPAGATING.reset(flag)
        context.detach(token)


def _with_run_correlation(ctx: Context) -> Context:
    """``ctx`` with the run context's hashed ids as baggage, where none are set."""
    run = current_run_context()
    if run is None or not run.hashes_ids:
        return ctx
    if any(baggage.get_baggage(key, ctx) is not None for key in BAGGAGE_KEYS):
        return ctx  # a correlation() block chose the ids
    from spanguard.config import current

    hasher = current().hasher
    for key, value in zip(BAGGAGE_KEYS, (run.session_id, run.user_id, run.tenant_id),
                          strict=True):
        if value:
            ctx = baggage.set_baggage(key, hasher(value), ctx)
    return ctx


def _with_meta(request: Any) -> Any:
    """A copy of a 1.x ``ClientRequest`` whose params' ``_meta`` carries the context."""
    root = getattr(request, "root", None)
    params = getattr(root, "params", None)
    if root is None or params is None or not hasattr(params, "meta"):
        return request
    existing = params.meta.model_dump(by_alias=True, exclude_none=True) \
        if params.meta is not None else {}
    meta_type = importlib.import_module("mcp.types").RequestParams.Meta
    params = params.model_copy(update={"meta": meta_type(**outgoing_meta(existing))})
    return request.model_copy(update={"root": root.model_copy(update={"params": params})})


def _install_session_hook() -> None:
    """Wrap mcp 1.x ``ClientSession.send_request`` once; it injects only inside
    :func:`propagate_requests`, so other sessions in the process are untouched."""
    session_type: Any = importlib.import_module("mcp.client.session").ClientSession
    send = session_type.send_request
    if getattr(send, _HOOK_MARK, False):
        return

    async def send_request(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if _PROPAGATING.get():
            request = _with_meta(request)
        return await send(self, request, *args, **kwargs)

    setattr(send_request, _HOOK_MARK, True)
    session_type.send_request = send_request
