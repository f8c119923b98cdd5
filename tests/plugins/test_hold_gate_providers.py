"""A hold gate given no providers follows the handler tracing the run: its decisions land in
the handler's trace, through the handler's tracer and meter providers; a gate given its
own providers keeps them."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from spanguard import semconv as sc
from spanguard.guardrails.holds import HoldRules
from spanguard.guardrails.policy import Policy
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.plugins.langgraph_holds import HoldGate, HoldMiddleware
from spanguard.testing import SpanCapture, capture
from tests.plugins import fakes
from tests.plugins.test_entry_points import Meter

POLICY = Policy(holds=HoldRules(tools=("send",)))


@tool
def send(to: str) -> str:
    """Send a message."""
    return f"sent to {to}"


def _agent(middleware: HoldMiddleware) -> Any:
    model = fakes.ScriptedChatModel(model_name="m", script=[
        AIMessage("", tool_calls=[{"name": "send", "args": {"to": "bob"}, "id": "c-1"}]),
        "done"])
    return create_agent(model, [send], middleware=[middleware], checkpointer=InMemorySaver())


def test_hold_middleware_without_providers_records_into_the_handlers() -> None:
    cap = capture()
    meter = Meter()
    handler = SpanguardCallbackHandler(tracer_provider=cap.tracer_provider,
                                       meter_provider=meter.provider)
    agent = _agent(HoldMiddleware(POLICY, identity="alice"))
    paused = agent.invoke({"messages": [HumanMessage("tell bob")]},
                          {"configurable": {"thread_id": "t1"}, "callbacks": [handler]})
    assert paused["__interrupt__"][0].value["tool"] == "send"
    root = cap.tree()  # one tree: the decision did not escape to another provider
    held = root.find("guardrail holds")
    assert held.attributes[sc.GUARDRAIL_DECISION] == "hold"
    assert held.span.trace_id == root.span.trace_id
    assert meter.decisions() == {("holds", "hold"): 1}


async def test_hold_gate_without_providers_follows_the_handler_async() -> None:
    cap = capture()
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    middleware = HoldMiddleware(POLICY, identity="alice")
    paused = await _agent(middleware).ainvoke(
        {"messages": [HumanMessage("tell bob")]},
        {"configurable": {"thread_id": "t2"}, "callbacks": [handler]})
    assert paused["__interrupt__"]
    assert cap.tree().find("guardrail holds").attributes[sc.HOLD_ID] == (
        paused["__interrupt__"][0].value["hold_id"])


def test_one_gate_follows_each_handler_it_meets() -> None:
    """The same gate under two handlers on two providers: each run's decision goes to its own."""
    gate = HoldGate(POLICY, identity="alice")
    middleware = HoldMiddleware(POLICY, identity="alice")
    middleware.gate = gate
    caps = [capture(), capture()]
    for index, cap in enumerate(caps):
        handler = SpanguardCallbackHandler(cap.tracer_provider)
        _agent(middleware).invoke({"messages": [HumanMessage("tell bob")]},
                                  {"configurable": {"thread_id": f"t{index}"},
                                   "callbacks": [handler]})
    for cap in caps:
        assert len(cap.tree().find_all("guardrail holds")) == 1


def test_a_gate_with_its_own_tracer_provider_keeps_it(cap: SpanCapture) -> None:
    own = capture()
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    agent = _agent(HoldMiddleware(POLICY, identity="alice", tracer_provider=own.tracer_provider))
    agent.invoke({"messages": [HumanMessage("tell bob")]},
                 {"configurable": {"thread_id": "t3"}, "callbacks": [handler]})
    assert not cap.tree().find_all("guardrail holds")
    [held] = own.spans()
    assert held.name == "guardrail holds"
    # still in the run's trace: parented to the handler's span of the tools step
    assert held.trace_id == cap.tree().span.trace_id
