"""Maker-checker holds and post-action verification in LangGraph, in LangGraph's idiom.

A held tool call pauses the graph with ``langgraph.types.interrupt()`` (durable
with any checkpointer); the interrupt value carries the approval request id, a
human-readable summary and the approve command. Resuming after approval runs the
call exactly once; resuming after rejection answers the model with a
``ToolMessage`` saying it was rejected and why. After a call runs, the tool's
verifier (if any) checks it; the status goes on the tool span and a call that is
not confirmed is answered as such, never as a success.

One gate, two hooks (both are LangGraph 1.x's own tool-call interception points)::

    ToolNode(tools, wrap_tool_call=HoldGate(policy, identity="alice"))
    create_agent(model, tools, middleware=[HoldMiddleware(policy, identity="alice")])

The gate holds no policy logic: it asks the hold and verify guards (through an
:class:`~spanguard.guardrails.Enforcer`) and carries out their answer.

Resuming: ``graph.invoke(Command(resume=True), config)``; with several held calls
pending at once, resume each by interrupt id (LangGraph's rule). With a plain
``StateGraph`` + ``ToolNode``, all tool calls of one model turn are one node run,
so an unheld call beside a held one runs again when the node resumes;
``create_agent`` dispatches each call separately and has no such replay.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt
from opentelemetry import trace
from opentelemetry.trace import Span

from spanguard import semconv as sc
from spanguard.attributes import KIND_GUARDRAIL, guardrail_span_name
from spanguard.config import resolve_tracer_provider
from spanguard.guardrails import (
    Enforcer,
    HoldError,
    HoldPending,
    Policy,
    RunState,
    ToolCall,
    ToolOutcome,
    VerificationResult,
    load_policy,
    record_verification,
)
from spanguard.guardrails.holds import build_hold_guards, cleared, default_identity
from spanguard.guardrails.verify import (
    VerificationFailed,
    VerifyGuard,
    build_verify_guards,
)

IDENTITY_METADATA_KEY = "spanguard.identity"
INTERRUPT_TYPE = "spanguard.hold"
ToolResult = ToolMessage | Command[Any]


def interrupt_value(hold: HoldPending) -> dict[str, Any]:
    """What the graph's caller sees in ``result["__interrupt__"][i].value``."""
    record = hold.hold
    return {"type": INTERRUPT_TYPE, "hold_id": record.id, "tool": record.tool,
            "summary": record.summary, "reason": record.reason,
            "risk_tier": record.risk_tier, "maker": record.maker,
            "expires_at": record.expires_at, "payload_hash": record.payload_hash,
            "approve_command": hold.approve_command, "reject_command": hold.reject_command}


class HoldGate:
    """The ``wrap_tool_call`` callable: check, pause or refuse, execute once, verify.

    ``identity`` is the maker; else the run's ``config["metadata"]["spanguard.identity"]``;
    else the OS user. ``tools`` lets a policy read-back verifier call another tool
    (e.g. a ``git_log`` tool after ``git_commit``).
    """

    def __init__(self, policy: Policy | str | os.PathLike[str] | None = None, *,
                 identity: str | None = None, tools: Sequence[BaseTool] = (),
                 tracer_provider: trace.TracerProvider | None = None,
                 enforcer: Enforcer | None = None) -> None:
        if enforcer is None:
            loaded = load_policy(policy) or Policy()
            enforcer = Enforcer(loaded, resolve_tracer_provider(tracer_provider),
                                guards=[*build_hold_guards(loaded),
                                        *build_verify_guards(loaded)])
        self.enforcer = enforcer
        self.identity = identity
        self._tools = {tool.name: tool for tool in tools}
        self._tracer = trace.get_tracer(
            "spanguard.plugins.langgraph_holds",
            tracer_provider=resolve_tracer_provider(tracer_provider))

    # --- the two framework hooks ------------------------------------------------
    def __call__(self, request: ToolCallRequest,
                 execute: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        run, call, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        with cleared(call):
            result = execute(request)
        return self._verify(run, call, request, result)

    async def acall(self, request: ToolCallRequest,
                    execute: Callable[[ToolCallRequest], Awaitable[ToolResult]]) -> ToolResult:
        run, call, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        with cleared(call):
            result = await execute(request)
        return self._verify(run, call, request, result)

    # --- steps ---------------------------------------------------------------------
    def _maker(self, request: ToolCallRequest) -> str:
        if self.identity:
            return self.identity
        runtime = getattr(request, "runtime", None)
        config = getattr(runtime, "config", None) or {}
        metadata = config.get("metadata") or {}
        named = metadata.get(IDENTITY_METADATA_KEY)
        return str(named) if named else default_identity()

    def _admit(self, request: ToolCallRequest) -> tuple[RunState, ToolCall, ToolMessage | None]:
        """Ask the guards until they allow or refuse; pause on every pending answer."""
        tool_call = request.tool_call
        call = ToolCall(tool=tool_call["name"], arguments=dict(tool_call.get("args") or {}),
                        call_id=tool_call.get("id"))
        span = trace.get_current_span()
        context = span.get_span_context()
        run = self.enforcer.start_run(
            call.call_id, identity=self._maker(request),
            trace_id=format(context.trace_id, "032x") if context.is_valid else None)
        while True:
            try:
                self.enforcer.before_tool_call(run, call, span if context.is_valid else None)
                return run, call, None
            except HoldPending as held:
                interrupt(interrupt_value(held))
            except HoldError as refused:
                return run, call, ToolMessage(
                    content=str(refused), name=call.tool, tool_call_id=call.call_id or "",
                    status="error",
                    response_metadata={"spanguard": {"hold_id": refused.hold_id,
                                                     "hold_status": refused.hold.status}})

    def _read_back(self, tool: str, arguments: Mapping[str, Any]) -> Any:
        if tool not in self._tools:
            raise LookupError(f"read-back tool {tool!r} was not given to HoldGate(tools=...)")
        return self._tools[tool].invoke(dict(arguments))

    def _verify(self, run: RunState, call: ToolCall, request: ToolCallRequest,
                result: ToolResult) -> ToolResult:
        if not isinstance(result, ToolMessage):
            return result
        outcome = ToolOutcome(result.content, is_error=result.status == "error",
                              read_back=self._read_back)
        span = trace.get_current_span()
        decisions = self.enforcer.after_tool_call(run, call, outcome,
                                                  span if span.is_recording() else None)
        verification = next((d for d in decisions if d.guard == VerifyGuard.name), None)
        if verification is None:
            return result
        status = verification.attributes.get(sc.VERIFICATION_STATUS, "unknown")
        checked = VerificationResult(call.tool, status, verification.reason)
        self._record(span, checked)
        if checked.confirmed:
            return result.model_copy(update={"response_metadata": {
                **result.response_metadata, "spanguard": {"verification": status}}})
        return result.model_copy(update={
            "content": f"[{VerificationFailed(checked)}; do not report this action as "
                       f"done]\n{result.content}",
            "status": "error",
            "response_metadata": {**result.response_metadata,
                                  "spanguard": {"verification": status}}})

    def _record(self, span: Span, result: VerificationResult) -> None:
        """On the tool span when it is still open, else on a ``guardrail verify`` span."""
        if span.is_recording():
            record_verification(span, result)
            return
        with self._tracer.start_as_current_span(
                guardrail_span_name(VerifyGuard.name), attributes=dict(KIND_GUARDRAIL),
                end_on_exit=True) as own:
            record_verification(own, result)


class HoldMiddleware(AgentMiddleware):
    """The same gate for ``langchain.agents.create_agent(middleware=[...])``."""

    def __init__(self, policy: Policy | str | os.PathLike[str] | None = None, *,
                 identity: str | None = None, tools: Sequence[BaseTool] = (),
                 tracer_provider: trace.TracerProvider | None = None) -> None:
        super().__init__()
        self.gate = HoldGate(policy, identity=identity, tools=tools,
                             tracer_provider=tracer_provider)

    def wrap_tool_call(self, request: ToolCallRequest,
                       handler: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        return self.gate(request, handler)

    async def awrap_tool_call(
            self, request: ToolCallRequest,
            handler: Callable[[ToolCallRequest], Awaitable[ToolResult]]) -> ToolResult:
        return await self.gate.acall(request, handler)
