"""The hold story in LangGraph: interrupt, approve as someone else, resume, run once, verify."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from spanguard import semconv as sc
from spanguard.guardrails import (
    HoldRules,
    Policy,
    ReadBackCheck,
    Verification,
    approve,
    get_hold,
    list_holds,
    open_audit_log,
    reject,
)
from spanguard.plugins.langchain import HeldWithoutGate, SpanguardCallbackHandler
from spanguard.plugins.langgraph_holds import HoldGate, HoldMiddleware
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import ScriptedModel


def pay_call(call_id: str = "call-1", to: str = "bob", amount: int = 5) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "payments_send", "id": call_id,
                                      "args": {"to": to, "amount": amount}}])


class Ledger:
    """The world the payment tool changes, and a tool to read it back."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

        @tool
        def payments_send(to: str, amount: int) -> str:
            """Send money."""
            self.sent.append((to, amount))
            return f"sent {amount} to {to}"

        @tool
        def payments_list() -> str:
            """List sent payments."""
            return "\n".join(f"{to}:{amount}" for to, amount in self.sent)

        self.send: BaseTool = payments_send
        self.list: BaseTool = payments_list


def policy(verifier: Any) -> Policy:
    return Policy(holds=HoldRules(tools=("payments_*",)),
                  verify=Verification({"payments_send": verifier}))


def tool_graph(model: ScriptedModel, tools: list[BaseTool], wrap: Any) -> Any:
    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools, wrap_tool_call=wrap))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("handler_policy", ["telemetry only", "same policy"])
def test_state_graph_held_approved_resumed_executed_once_and_verified(
        cap: SpanCapture, handler_policy: str) -> None:
    """The normal setup: the callback handler traces, the gate holds and verifies.

    Whether or not the handler enforces the same policy, the call is checked once,
    executed once, verified once, and the status is on its ``execute_tool`` span.
    """
    ledger = Ledger()
    reads: list[int] = []

    @tool
    def payments_list() -> str:
        """List sent payments."""
        reads.append(1)
        return "\n".join(f"{to}:{amount}" for to, amount in ledger.sent)

    rules = policy(ReadBackCheck("payments_list", {}, "{to}:{amount}"))
    gate = HoldGate(rules, identity="alice", tools=[payments_list],
                    tracer_provider=cap.tracer_provider)
    handler = SpanguardCallbackHandler(
        cap.tracer_provider, policy=rules if handler_policy == "same policy" else None)
    model = ScriptedModel(script=[pay_call(), AIMessage("paid bob")])
    app = tool_graph(model, [ledger.send], gate)
    config = {"configurable": {"thread_id": "t1"}, "callbacks": [handler]}

    paused = app.invoke({"messages": [HumanMessage("pay bob 5")]}, config)
    [pending] = paused["__interrupt__"]
    hold_id = pending.value["hold_id"]
    assert "alice asks to run payments_send" in pending.value["summary"]
    assert pending.value["approve_command"] == f"spanguard holds approve {hold_id} --as NAME"
    assert ledger.sent == []

    still = app.invoke(Command(resume=True), config)  # resumed before anyone decided
    assert still["__interrupt__"][0].value["hold_id"] == hold_id
    assert ledger.sent == [] and len(list_holds()) == 1

    with pytest.raises(Exception, match="cannot also decide"):
        approve(hold_id, "alice")
    approve(hold_id, "carol", "invoice 42")
    done = app.invoke(Command(resume=True), config)
    assert ledger.sent == [("bob", 5)]
    assert reads == [1], "verified exactly once"
    result = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert result.content == "sent 5 to bob" and result.status == "success"
    assert result.response_metadata["spanguard"]["verification"] == "verified"
    assert done["messages"][-1].content == "paid bob"
    assert get_hold(hold_id).status == "executed"

    app.invoke(Command(resume=True), config)  # nothing left to resume: no second payment
    assert ledger.sent == [("bob", 5)] and reads == [1]

    # Pause, wait, approval and execution are one trace: each resumed run is a child of the
    # run it resumes. The last resume found nothing paused on the thread: a trace of its own.
    story, idle = cap.trees()
    held = story
    [waiting] = [n for n in held.children if n.name.startswith("invoke_agent")]
    [resumed] = [n for n in waiting.children if n.name.startswith("invoke_agent")]
    assert [held.attributes[sc.RUN_STATUS], waiting.attributes[sc.RUN_STATUS],
            resumed.attributes[sc.RUN_STATUS]] == ["paused", "paused", "ok"]
    assert waiting.attributes[sc.RUN_RESUMED] is True and resumed.attributes[sc.RUN_RESUMED]
    for paused_run in (held, waiting):
        tools = next(n for n in paused_run.children if n.name == "tools")
        assert tools.attributes[sc.RUN_INTERRUPTED] is True
        decision = tools.find("guardrail holds")
        assert decision.attributes[sc.HOLD_ID] == hold_id
        assert decision.attributes[sc.GUARDRAIL_DECISION] == "hold"
        assert not tools.find_all("execute_tool payments_send")
    [executed] = resumed.find_all("execute_tool payments_send")
    assert executed.attributes[sc.VERIFICATION_STATUS] == "verified"
    # The hold's fate and its checker as attributes of the tool span itself (every
    # backend shows those; few show span events), beside the decision's event.
    assert executed.attributes[sc.HOLD_ID] == hold_id
    assert executed.attributes[sc.HOLD_DECISION] == "approved"
    assert executed.attributes[sc.HOLD_CHECKER] == "carol"
    assert held.find("guardrail holds").attributes[sc.HOLD_DECISION] == "created"
    assert executed.span.status != "ERROR"
    assert [e["name"] for e in executed.span.events] == ["guardrail verify"]
    tools_node = resumed.find("tools")
    assert [e["name"] for e in tools_node.span.events] == ["guardrail holds"]  # the approval
    assert not [s for s in cap.spans() if s.name == "guardrail verify"]
    assert idle.attributes[sc.RUN_RESUMED] is True and idle.attributes[sc.RUN_STATUS] == "ok"
    assert not idle.find_all("execute_tool payments_send")
    # the verifier's read-back is traced but, being the gate's own read, never held
    [read] = resumed.find_all("execute_tool payments_list")
    assert read.span.status != "ERROR" and not read.children
    events = [r.event for r in open_audit_log().records()]
    assert events == ["hold.created", "hold.approved", "hold.executed",
                      "verification.verified"]
    assert open_audit_log().verify().ok


def test_rejection_answers_the_model_and_never_runs_the_tool(cap: SpanCapture) -> None:
    ledger = Ledger()
    gate = HoldGate(policy(lambda a, r: "verified"), identity="alice",
                    tracer_provider=cap.tracer_provider)
    model = ScriptedModel(script=[pay_call(to="mallory", amount=900),
                                  AIMessage("I could not pay mallory")])
    app = tool_graph(model, [ledger.send], gate)
    config = {"configurable": {"thread_id": "t2"}}
    hold_id = app.invoke({"messages": [HumanMessage("pay")]}, config)[
        "__interrupt__"][0].value["hold_id"]
    reject(hold_id, "carol", "unknown payee")
    done = app.invoke(Command(resume=True), config)
    assert ledger.sent == []
    message = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert message.status == "error"
    assert "rejected by carol: unknown payee" in str(message.content)
    assert any(isinstance(m, ToolMessage) and "rejected" in str(m.content)
               for m in model.seen[-1])  # the model saw why
    assert done["messages"][-1].content == "I could not pay mallory"


def test_unconfirmed_action_is_reported_as_not_done(cap: SpanCapture) -> None:
    ledger = Ledger()
    gate = HoldGate(Policy(verify=Verification({"payments_send": lambda a, r: "failed"})),
                    identity="alice", tracer_provider=cap.tracer_provider)
    model = ScriptedModel(script=[pay_call(), AIMessage("ok")])
    app = tool_graph(model, [ledger.send], gate)
    done = app.invoke({"messages": [HumanMessage("pay")]},
                      {"configurable": {"thread_id": "t3"}})
    message = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert message.status == "error" and "not confirmed" in str(message.content)
    assert ledger.sent == [("bob", 5)]  # not held (no hold rule): it ran, but unconfirmed
    [span] = [s for s in cap.spans() if s.name == "guardrail verify"]
    assert span.attributes[sc.VERIFICATION_STATUS] == "failed" and span.status == "ERROR"


def test_create_agent_middleware_with_identity_from_run_metadata(cap: SpanCapture) -> None:
    ledger = Ledger()
    middleware = HoldMiddleware(policy(lambda a, r: "verified" if ("eve", 7) in ledger.sent
                                       else "failed"), tracer_provider=cap.tracer_provider)
    model = ScriptedModel(script=[pay_call("call-9", "eve", 7), AIMessage("paid eve")])
    agent = create_agent(model, [ledger.send], middleware=[middleware],
                         checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t4"}, "metadata": {"spanguard.identity": "svc-bot"}}
    paused = agent.invoke({"messages": [HumanMessage("pay eve 7")]}, config)
    value = paused["__interrupt__"][0].value
    assert value["maker"] == "svc-bot" and ledger.sent == []
    approve(value["hold_id"], "carol")
    done = agent.invoke(Command(resume=True), config)
    assert ledger.sent == [("eve", 7)]
    message = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert message.response_metadata["spanguard"]["verification"] == "verified"
    assert done["messages"][-1].content == "paid eve"


async def test_async_graph_holds_and_resumes(cap: SpanCapture) -> None:
    ledger = Ledger()
    middleware = HoldMiddleware(policy(lambda a, r: "verified"), identity="alice",
                                tracer_provider=cap.tracer_provider)
    agent = create_agent(ScriptedModel(script=[pay_call("c-a"), AIMessage("done")]),
                         [ledger.send], middleware=[middleware], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t5"},
              "callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]}
    paused = await agent.ainvoke({"messages": [HumanMessage("pay")]}, config)
    approve(paused["__interrupt__"][0].value["hold_id"], "carol")
    await agent.ainvoke(Command(resume=True), config)
    assert ledger.sent == [("bob", 5)]
    held = cap.tree()  # the resumed run continues the held run's trace, as its child
    [resumed] = [n for n in held.children if n.name.startswith("invoke_agent")]
    assert held.find("guardrail holds").attributes[sc.GUARDRAIL_DECISION] == "hold"
    assert (held.attributes[sc.RUN_STATUS], resumed.attributes[sc.RUN_STATUS]) == (
        "paused", "ok")
    executed = resumed.find("execute_tool payments_send")
    assert executed.attributes[sc.VERIFICATION_STATUS] == "verified"


def test_create_agent_middleware_with_the_handler_one_trace_per_run(cap: SpanCapture) -> None:
    ledger = Ledger()
    checks: list[tuple[str, int]] = []

    def verifier(arguments: Any, result: Any) -> str:
        checks.append((arguments["to"], arguments["amount"]))
        return "verified" if ("eve", 7) in ledger.sent else "failed"

    middleware = HoldMiddleware(policy(verifier), identity="alice",
                                tracer_provider=cap.tracer_provider)
    agent = create_agent(ScriptedModel(script=[pay_call("call-9", "eve", 7),
                                               AIMessage("paid eve")]),
                         [ledger.send], middleware=[middleware], checkpointer=InMemorySaver())
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    config = {"configurable": {"thread_id": "t6"}, "callbacks": [handler]}
    paused = agent.invoke({"messages": [HumanMessage("pay eve 7")]}, config)
    hold_id = paused["__interrupt__"][0].value["hold_id"]
    approve(hold_id, "carol")
    agent.invoke(Command(resume=True), config)
    assert ledger.sent == [("eve", 7)] and checks == [("eve", 7)]

    held = cap.tree()  # no stray root: the hold decision and the resumed run in one trace
    [resumed] = [n for n in held.children if n.name.startswith("invoke_agent")]
    assert held.find("guardrail holds").attributes[sc.HOLD_ID] == hold_id
    [executed] = resumed.find_all("execute_tool payments_send")
    assert executed.attributes[sc.VERIFICATION_STATUS] == "verified"
    # The hold's fate and its checker as attributes of the tool span itself (every
    # backend shows those; few show span events), beside the decision's event.
    assert executed.attributes[sc.HOLD_ID] == hold_id
    assert executed.attributes[sc.HOLD_DECISION] == "approved"
    assert executed.attributes[sc.HOLD_CHECKER] == "carol"
    assert held.find("guardrail holds").attributes[sc.HOLD_DECISION] == "created"


def test_unconfirmed_action_marks_the_execute_tool_span_with_the_handler(
        cap: SpanCapture) -> None:
    ledger = Ledger()
    gate = HoldGate(Policy(verify=Verification({"payments_send": lambda a, r: "failed"})),
                    identity="alice", tracer_provider=cap.tracer_provider)
    app = tool_graph(ScriptedModel(script=[pay_call(), AIMessage("ok")]), [ledger.send], gate)
    done = app.invoke({"messages": [HumanMessage("pay")]},
                      {"configurable": {"thread_id": "t7"},
                       "callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    message = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert message.status == "error" and "not confirmed" in str(message.content)
    executed = cap.tree().find("execute_tool payments_send")
    assert executed.attributes[sc.VERIFICATION_STATUS] == "failed"
    assert executed.span.status == "ERROR"
    assert executed.attributes[sc.ERROR_TYPE] == "unverified_action"
    assert not cap.tree().find_all("guardrail verify")  # on the tool span, not beside it


def test_handler_without_a_gate_fails_closed_with_a_clear_error(cap: SpanCapture) -> None:
    ledger = Ledger()
    handler = SpanguardCallbackHandler(cap.tracer_provider, identity="alice",
                                       policy=policy(lambda a, r: "verified"))
    app = tool_graph(ScriptedModel(script=[pay_call("call-5"), AIMessage("paid")]),
                     [ledger.send], None)
    config = {"configurable": {"thread_id": "t8"}, "callbacks": [handler]}
    with pytest.raises(HeldWithoutGate) as info:
        app.invoke({"messages": [HumanMessage("pay bob 5")]}, config)
    assert ledger.sent == []
    message = str(info.value)
    hold_id = info.value.hold_id
    assert f"spanguard holds approve {hold_id} --as NAME" in message
    assert "The call did not run" in message and "HoldGate" in message
    assert "graph.invoke(None, config)" in message
    tool_span = cap.tree().find("execute_tool payments_send")
    assert tool_span.attributes[sc.ERROR_TYPE] == "held_for_approval"
    assert tool_span.find("guardrail holds").attributes[sc.HOLD_ID] == hold_id

    # With a checkpointer the failed step can be re-run after approval: same call id,
    # so the approval applies, once; the handler verifies and records it on the span.
    approve(hold_id, "carol")
    cap.clear()
    assert app.invoke(None, config)["messages"][-1].content == "paid"
    app.invoke(None, config)
    assert ledger.sent == [("bob", 5)]
    executed = cap.trees()[0].find("execute_tool payments_send")
    assert executed.attributes[sc.VERIFICATION_STATUS] == "verified"
