"""One owner per tool call: when an outer gate holds and verifies it, other hooks defer.

In LangGraph two spanguard parts see the same tool call: the hold gate, around its
execution (``ToolNode(wrap_tool_call=...)`` or agent middleware), and the callback
handler, inside it (the ``execute_tool`` span, and a policy's guards of its own).
Checking the hold twice would consume or re-request an approval twice; verifying
twice would run the verifier (and its read-back) twice and audit it twice. So the
gate marks the call it executes (:func:`gated`): the hold and verify guards skip a
call that a gate owns (:func:`gate_for`), and the tracing adapter hands its still
open tool span to the gate (:meth:`GatedCall.settle`) before ending it, so the
gate's verification is recorded on the ``execute_tool`` span, exactly once.

Framework-free: the mark is a context variable, which LangGraph, LangChain's
callbacks and asyncio tasks all carry along.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from opentelemetry.trace import Span

from spanguard.guardrails.steps import ToolCall

# (span of the tool call or None, the tool's result, whether the tool reported an error)
Settle = Callable[["Span | None", Any, bool], None]


class GatedCall:
    """The call a gate is executing; ``settled`` once its outcome has been handed over."""

    __slots__ = ("_settle", "call_id", "error", "settled", "tool")

    def __init__(self, tool: str, call_id: str | None, settle: Settle) -> None:
        self.tool = tool
        self.call_id = call_id
        self.settled = False
        self.error: BaseException | None = None
        self._settle = settle

    def owns(self, tool: str, call_id: str | None) -> bool:
        return tool == self.tool and (self.call_id is None or call_id == self.call_id)

    def settle(self, span: Span | None, result: Any, is_error: bool) -> None:
        """Run the gate's after-call work (verification) once, while ``span`` is open.

        Never raises into the caller (a tracing callback): a failure is kept in
        ``error`` for the gate to raise once the execution has returned.
        """
        if self.settled:
            return
        self.settled = True
        token = _GATED.set(None)  # the gate's own guards run now: nothing to defer to
        try:
            self._settle(span, result, is_error)
        except BaseException as exc:  # the gate re-raises it, outside the callback
            self.error = exc
        finally:
            _GATED.reset(token)


_GATED: ContextVar[GatedCall | None] = ContextVar("spanguard_gated_call", default=None)


@contextlib.contextmanager
def gated(call: ToolCall, settle: Settle) -> Iterator[GatedCall]:
    """Scope of a gate executing ``call`` after its own checks allowed it."""
    gate = GatedCall(call.tool, call.call_id, settle)
    token = _GATED.set(gate)
    try:
        yield gate
    finally:
        _GATED.reset(token)


def gate_for(tool: str, call_id: str | None) -> GatedCall | None:
    """The gate that owns this tool call, if one is executing it in this context."""
    gate = _GATED.get()
    return gate if gate is not None and gate.owns(tool, call_id) else None
