"""The guardrail hooks: a refusal stops the step before the model or tool runs."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from spanguard import semconv as sc
from spanguard.guardrails import (
    Decision,
    Enforcer,
    Guard,
    GuardrailViolation,
    ModelCall,
    ModelUsage,
    Policy,
    RunState,
    ToolCall,
    ToolOutcome,
)
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

INPUT = {"messages": [HumanMessage("hi")]}


class BudgetExceeded(GuardrailViolation):
    guard = "budget"
    error_type = "budget_exceeded"


class RefuseSecondModelCall(Guard):
    """Allows one model call per run, refuses the next (before the provider is called)."""

    name = "budget"

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        if run.model_calls >= 1:
            return Decision("deny", self.name, "one call per run",
                            error=BudgetExceeded("one call per run"))
        return None


class Recorder(Guard):
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        self.events.append(("before_model", (run.user, call.model, call.is_retry)))
        return None

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        self.events.append(("after_model", (usage.input_tokens, usage.output_tokens,
                                             usage.cost_usd is not None)))
        return None

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        self.events.append(("before_tool", (call.tool, dict(call.arguments), call.call_id,
                                            call.arguments_hash)))
        return None

    def after_tool_call(self, run: RunState, call: ToolCall,
                        outcome: ToolOutcome) -> Decision | None:
        self.events.append(("after_tool", (call.tool, outcome.is_error)))
        return Decision("report", self.name, "verified")

    def end_run(self, run: RunState) -> None:
        self.events.append(("end_run", (run.model_calls, run.tool_calls, run.trace_id)))


def test_refusal_stops_the_graph_before_the_model_is_invoked(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=1)
    handler = SpanguardCallbackHandler(cap.tracer_provider, guards=[RefuseSecondModelCall()])
    graph = react_graph(model, [add])
    with pytest.raises(BudgetExceeded):
        graph.invoke(INPUT, {"callbacks": [handler]})
    assert model.calls == 1, "the second call never reached the provider"
    root = cap.tree()
    assert root.span.status == "ERROR"
    assert root.attributes[sc.ERROR_TYPE] == "budget_exceeded"
    refused = root.find_all("chat gpt-4o-mini")[-1]
    assert refused.span.status == "ERROR"
    assert refused.attributes[sc.ERROR_TYPE] == "budget_exceeded"
    guard_span = refused.find("guardrail budget")
    assert guard_span.attributes[sc.GUARDRAIL_DECISION] == "deny"
    assert len(handler._tree) == 0


async def test_refusal_stops_an_async_run_too(cap: SpanCapture) -> None:
    model = ScriptedChatModel(tool_steps=1)
    handler = SpanguardCallbackHandler(cap.tracer_provider, guards=[RefuseSecondModelCall()])
    with pytest.raises(BudgetExceeded):
        await react_graph(model, [add]).ainvoke(INPUT, {"callbacks": [handler]})
    assert model.calls == 1


def test_tool_refusal_stops_the_tool(cap: SpanCapture) -> None:
    ran: list[int] = []

    class NoTools(Guard):
        name = "hold"

        def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
            return Decision("hold", self.name, "needs approval")

    from langchain_core.tools import tool

    @tool
    def wire(a: int, b: int) -> int:
        """Moves money."""
        ran.append(a)
        return a

    handler = SpanguardCallbackHandler(cap.tracer_provider, guards=[NoTools()])
    model = ScriptedChatModel(tool_steps=1, tool_names=["wire"])
    strict = react_graph(model, [wire], handle_tool_errors=False)
    with pytest.raises(GuardrailViolation):
        strict.invoke(INPUT, {"callbacks": [handler]})
    assert ran == []
    tool_span = cap.tree().find("execute_tool wire")
    assert tool_span.span.status == "ERROR"
    assert tool_span.find("guardrail hold").attributes[sc.GUARDRAIL_DECISION] == "hold"
    cap.clear()
    # A ToolNode that handles tool errors turns the refusal into a message for the model.
    result = react_graph(model, [wire]).invoke(INPUT, {"callbacks": [handler]})
    assert ran == []
    assert "needs approval" in result["messages"][2].content


def test_every_hook_sees_the_step(cap: SpanCapture) -> None:
    recorder = Recorder()
    handler = SpanguardCallbackHandler(cap.tracer_provider,
                                       policy=Policy(name="audit"), guards=[recorder])
    react_graph(ScriptedChatModel(tool_steps=1), [add]).invoke(
        INPUT, {"callbacks": [handler], "metadata": {"user_id": "alice"}})
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["before_model", "after_model", "before_tool", "after_tool",
                     "before_model", "after_model", "end_run"]
    user_hash, model, is_retry = recorder.events[0][1]
    assert user_hash is not None and user_hash.startswith("hmac:")
    assert (model, is_retry) == ("gpt-4o-mini", False)
    assert recorder.events[1][1] == (10, 5, True)
    tool, arguments, call_id, digest = recorder.events[2][1]
    assert (tool, arguments, call_id) == ("add", {"a": 0, "b": 0}, "call_0_0")
    assert digest == cap.tree().find("execute_tool add").attributes[sc.TOOL_ARGS_HASH]
    assert recorder.events[3][1] == ("add", False)
    model_calls, tool_calls, trace_id = recorder.events[-1][1]
    assert (model_calls, tool_calls) == (2, 1)
    assert trace_id == cap.tree().span.trace_id
    events = cap.tree().find("execute_tool add").span.events
    assert [event["name"] for event in events] == ["guardrail recorder"]


def test_no_policy_means_no_enforcer(cap: SpanCapture) -> None:
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    assert handler._guard is None  # the enforcement half is not even built


def test_policy_path_from_environment(cap: SpanCapture, tmp_path: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('name = "p"\nbogus = 1\n')
    monkeypatch.setenv("SPANGUARD_POLICY", str(path))
    from spanguard.errors import ConfigError

    with pytest.raises(ConfigError, match="bogus"):
        SpanguardCallbackHandler(cap.tracer_provider)


def test_enforcer_instance_records_on_the_same_provider(cap: SpanCapture) -> None:
    enforcer = Enforcer(None, cap.tracer_provider, guards=[RefuseSecondModelCall()])
    assert enforcer.active


def test_unhashable_tool_arguments_are_still_enforced(cap: SpanCapture) -> None:
    """A telemetry problem (arguments that cannot be hashed) must not skip the guard."""
    from uuid import uuid4

    refused: list[ToolCall] = []

    class Deny(Guard):
        name = "deny"

        def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
            refused.append(call)
            return Decision("deny", self.name, "no")

    handler = SpanguardCallbackHandler(cap.tracer_provider, guards=[Deny()])
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    root = uuid4()
    handler.on_chain_start({}, {}, run_id=root, name="agent")
    with pytest.raises(GuardrailViolation):
        handler.on_tool_start({"name": "wire"}, "...", run_id=uuid4(), parent_run_id=root,
                              inputs=cyclic)
    assert len(refused) == 1 and refused[0].arguments_hash is None
    assert handler.telemetry_errors == 1
    handler.on_chain_error(GuardrailViolation("no"), run_id=root)  # the run ends too
