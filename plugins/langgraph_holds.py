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

Before the holds, the gate checks the call's arguments against the tool's own
``args_schema`` (as the JSON Schema the model was given) when the policy has a
``[tool_arguments]`` table: a call that does not match is answered with an error
``ToolMessage`` naming the fields and rules (the tool does not run; the model can
correct it), and the decision span carries ``error.type=tool_argument_error`` and
the schema's hash. Only a gate sees the tool object, so only a gate can check it.

The gate holds no policy logic: it asks the policy's argument, hold and verify guards
(through an :class:`~spanguard.guardrails.enforcer.Enforcer` built from the policy
without its budgets and loop checks, which belong to the callback handler) and
carries out their answer.

Its decisions are recorded under the span of the node running the tools when a
:class:`~spanguard.plugins.langchain.SpanguardCallbackHandler` traces the run, and,
unless the gate was given providers of its own, through that handler's tracer and
meter providers: one trace, one destination (``spanguard.testing.capture()``
sees them too).

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

from spanguard.extras import missing_extra

try:
    from langchain.agents.middleware import AgentMiddleware
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from langgraph.prebuilt.tool_node import ToolCallRequest
    from langgraph.types import Command, interrupt
except ModuleNotFoundError as exc:
    raise missing_extra(__name__, exc, "langgraph") from exc
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Tracer

from spanguard.attributes import KIND_GUARDRAIL, guardrail_span_name
from spanguard.config import resolve_tracer_provider
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.gating import GatedCall, gated
from spanguard.guardrails.holds import HoldError, HoldPending, default_identity
from spanguard.guardrails.pipeline import build_guards
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.steps import RunState, ToolCall, ToolOutcome
from spanguard.guardrails.tool_arguments import ToolSchema
from spanguard.guardrails.verify import (
    VerificationFailed,
    VerificationResult,
    VerifyGuard,
    record_verification,
    verification_of,
)
from spanguard.plugins.langchain import SpanguardCallbackHandler, run_tracing

IDENTITY_METADATA_KEY = "spanguard.identity"
INTERRUPT_TYPE = "spanguard.hold"
ToolResult = ToolMessage | Command[Any]
# The guards a gate runs around a tool call; the handler runs the rest of the policy.
GATE_PARTS = ("tool_arguments", "holds", "verify")
_TRACER_NAME = "spanguard.plugins.langgraph_holds"
_MAX_FOLLOWED = 16  # distinct handler providers remembered (a handler per provider is usual)
_MAX_SCHEMAS = 1024  # tool schemas remembered (one per distinct tool name)


def interrupt_value(hold: HoldPending) -> dict[str, Any]:
    """What the graph's caller sees in ``result["__interrupt__"][i].value``: the
    request, and why it was held (``rule``: ``tools``, ``action_classes``,
    ``high_risk`` or ``unverified``; ``reason`` in words)."""
    record = hold.hold
    return {"type": INTERRUPT_TYPE, "hold_id": record.id, "tool": record.tool,
            "summary": record.summary, "reason": record.reason, "rule": record.rule,
            "action_class": record.action_class, "server": record.server,
            "risk_tier": record.risk_tier, "maker": record.maker,
            "expires_at": record.expires_at, "payload_hash": record.payload_hash,
            "approve_command": hold.approve_command, "reject_command": hold.reject_command}


class HoldGate:
    """The ``wrap_tool_call`` callable: check, pause or refuse, execute once, verify.

    ``policy``: a :class:`~spanguard.guardrails.policy.Policy`, a path to a policy
    TOML file, or None (then ``SPANGUARD_POLICY``); only its holds and verification
    apply here. ``identity`` is the maker; else the run's
    ``config["metadata"]["spanguard.identity"]``; else the OS user. ``tools`` lets a
    policy read-back verifier call another tool (e.g. a ``git_log`` tool after
    ``git_commit``). ``tracer_provider``/``meter_provider``: where its decisions go;
    each one not given follows the handler tracing the run, else the default.
    ``enforcer``: a ready-made enforcer instead (used as it is, never followed).
    """

    def __init__(self, policy: Policy | str | os.PathLike[str] | None = None, *,
                 identity: str | None = None, tools: Sequence[BaseTool] = (),
                 tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None,
                 enforcer: Enforcer | None = None) -> None:
        provider = resolve_tracer_provider(tracer_provider)
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._follows = enforcer is None and (tracer_provider is None or meter_provider is None)
        if enforcer is None:
            # Only holds and verification: budgets, loop checks and the policy's own
            # guards are the handler's, and a gate running them too would count (or
            # check) every tool call twice.
            self._policy = load_policy(policy) or Policy()
            enforcer = Enforcer(self._policy, provider, meter_provider,
                                guards=build_guards(self._policy, parts=GATE_PARTS))
        self.enforcer = enforcer
        self.identity = identity
        self._tools = {tool.name: tool for tool in tools}
        self._tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=provider)
        self._own = (provider, meter_provider)
        self._followed: dict[tuple[Any, Any], tuple[Enforcer, Tracer]] = {}
        self._schemas: dict[str, tuple[BaseTool, ToolSchema | None]] = {}

    # --- the two framework hooks ------------------------------------------------
    def __call__(self, request: ToolCallRequest,
                 execute: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        check, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        with gated(check.call, check.settle) as gate:
            result = execute(request)
        return check.finish(gate, result)

    async def acall(self, request: ToolCallRequest,
                    execute: Callable[[ToolCallRequest], Awaitable[ToolResult]]) -> ToolResult:
        check, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        with gated(check.call, check.settle) as gate:
            result = await execute(request)
        return check.finish(gate, result)

    # --- steps ---------------------------------------------------------------------
    def _maker(self, request: ToolCallRequest) -> str:
        if self.identity:
            return self.identity
        metadata = _config(request).get("metadata") or {}
        named = metadata.get(IDENTITY_METADATA_KEY)
        return str(named) if named else default_identity()

    def _admit(self, request: ToolCallRequest) -> tuple[_Check, ToolMessage | None]:
        """Ask the guards until they allow or refuse; pause on every pending answer.

        Decisions go under the span of the node running the tools when a
        :class:`~spanguard.plugins.langchain.SpanguardCallbackHandler` traces it (the
        run's own trace, not a trace of their own), else under the current span.
        """
        tool_call = request.tool_call
        call = ToolCall(tool=tool_call["name"], arguments=dict(tool_call.get("args") or {}),
                        call_id=tool_call.get("id"), schema=self._schema(request.tool))
        tracing = run_tracing(_config(request).get("callbacks"))
        if tracing is not None:
            span: Span = tracing.span
            enforcer, tracer = self._following(tracing.handler)
        else:
            span, enforcer, tracer = trace.get_current_span(), self.enforcer, self._tracer
        context = span.get_span_context()
        run = enforcer.start_run(
            call.call_id, identity=self._maker(request),
            trace_id=format(context.trace_id, "032x") if context.is_valid else None)
        check = _Check(self, enforcer, tracer, run, call)
        while True:
            try:
                with trace.use_span(span, end_on_exit=False, record_exception=False,
                                    set_status_on_exception=False):
                    check.governance = enforcer.before_tool_call(
                        run, call, span if context.is_valid else None)
                return check, None
            except HoldPending as held:
                interrupt(interrupt_value(held))
            except HoldError as refused:
                return check, ToolMessage(
                    content=str(refused), name=call.tool, tool_call_id=call.call_id or "",
                    status="error",
                    response_metadata={"spanguard": {"hold_id": refused.hold_id,
                                                     "hold_status": refused.hold.status}})
            except GuardrailViolation as refused:  # the arguments do not fit the schema
                return check, ToolMessage(
                    content=str(refused), name=call.tool, tool_call_id=call.call_id or "",
                    status="error",
                    response_metadata={"spanguard": {"error_type": refused.error_type}})

    def _schema(self, tool: BaseTool | None) -> ToolSchema | None:
        """The tool's argument schema as the model was given it, built once per tool."""
        if tool is None:
            return None
        known = self._schemas.get(tool.name)
        if known is not None and known[0] is tool:
            return known[1]
        try:
            parameters = convert_to_openai_tool(tool)["function"].get("parameters")
        except Exception:  # a tool LangChain cannot describe: nothing to check against
            parameters = None
        schema = ToolSchema(parameters) if isinstance(parameters, Mapping) else None
        if len(self._schemas) >= _MAX_SCHEMAS:
            self._schemas.clear()
        self._schemas[tool.name] = (tool, schema)
        return schema

    def _following(self, handler: SpanguardCallbackHandler) -> tuple[Enforcer, Tracer]:
        """The enforcer (same guards, so the same holds) recording through ``handler``'s
        providers wherever this gate was given none of its own."""
        if not self._follows:
            return self.enforcer, self._tracer
        key = (self._tracer_provider or handler.tracer_provider,
               self._meter_provider or handler.meter_provider)
        if key == self._own:
            return self.enforcer, self._tracer
        found = self._followed.get(key)
        if found is None:
            if len(self._followed) >= _MAX_FOLLOWED:
                self._followed.clear()
            found = self._followed[key] = (
                Enforcer(self._policy, key[0], key[1], guards=self.enforcer.guards),
                trace.get_tracer(_TRACER_NAME, tracer_provider=key[0]))
        return found

    def _read_back(self, tool: str, arguments: Mapping[str, Any]) -> Any:
        """The verifier's read: part of this gate's verification, not an agent action, so
        it is gated too (a handler traces it but neither holds nor verifies it)."""
        if tool not in self._tools:
            raise LookupError(f"read-back tool {tool!r} was not given to HoldGate(tools=...)")
        with gated(ToolCall(tool, arguments), _nothing_to_settle):
            return self._tools[tool].invoke(dict(arguments))


class _Check:
    """Verification of one executed call: on the handler's ``execute_tool`` span while it
    is open (the handler calls :meth:`settle` from its tool-end callback), else, with no
    handler tracing the call, after the execution on a ``guardrail verify`` span."""

    __slots__ = ("call", "enforcer", "gate", "governance", "result", "run", "tracer")

    def __init__(self, gate: HoldGate, enforcer: Enforcer, tracer: Tracer, run: RunState,
                 call: ToolCall) -> None:
        self.gate = gate
        self.enforcer = enforcer
        self.tracer = tracer
        self.run = run
        self.call = call
        self.result: VerificationResult | None = None
        # What admitting the call decided about its hold (an approval used, by whom):
        # recorded on the node's span then, on the tool's span once it exists.
        self.governance: dict[str, Any] = {}

    def settle(self, span: Span | None, result: Any, is_error: bool) -> None:
        if self.governance and span is not None and span.is_recording():
            span.set_attributes(self.governance)
        content = result.content if isinstance(result, ToolMessage) else result
        outcome = ToolOutcome(content, is_error=is_error, read_back=self.gate._read_back)
        decisions = self.enforcer.after_tool_call(self.run, self.call, outcome, span)
        self.result = verification_of(self.call.tool, decisions)
        if self.result is None:
            return
        if span is not None and span.is_recording():
            record_verification(span, self.result)
            return
        with self.tracer.start_as_current_span(
                guardrail_span_name(VerifyGuard.name), attributes=dict(KIND_GUARDRAIL),
                end_on_exit=True) as own:
            record_verification(own, self.result)

    def finish(self, gate: GatedCall, result: ToolResult) -> ToolResult:
        """The tool message as the model should see it: never "done" unless verified."""
        if not isinstance(result, ToolMessage):
            return result
        if not gate.settled:  # no handler traced the call: verify now
            gate.settle(None, result, result.status == "error")
        if gate.error is not None:
            raise gate.error
        checked = self.result
        if checked is None:
            return result
        metadata = {**result.response_metadata, "spanguard": {"verification": checked.status}}
        if checked.confirmed:
            return result.model_copy(update={"response_metadata": metadata})
        return result.model_copy(update={
            "content": f"[{VerificationFailed(checked)}; do not report this action as "
                       f"done]\n{result.content}",
            "status": "error", "response_metadata": metadata})


def _nothing_to_settle(span: Span | None, result: Any, is_error: bool) -> None:
    return None


def _config(request: ToolCallRequest) -> Mapping[str, Any]:
    runtime = getattr(request, "runtime", None)
    return getattr(runtime, "config", None) or {}


class HoldMiddleware(AgentMiddleware):
    """The same gate for ``langchain.agents.create_agent(middleware=[...])``; the same
    arguments as :class:`HoldGate`."""

    def __init__(self, policy: Policy | str | os.PathLike[str] | None = None, *,
                 identity: str | None = None, tools: Sequence[BaseTool] = (),
                 tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None) -> None:
        super().__init__()
        self.gate = HoldGate(policy, identity=identity, tools=tools,
                             tracer_provider=tracer_provider, meter_provider=meter_provider)

    def wrap_tool_call(self, request: ToolCallRequest,
                       handler: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        return self.gate(request, handler)

    async def awrap_tool_call(
            self, request: ToolCallRequest,
            handler: Callable[[ToolCallRequest], Awaitable[ToolResult]]) -> ToolResult:
        return await self.gate.acall(request, handler)
