"""The wrapper inside LangGraph: StateGraph + ToolNode with bind_tools, streamed; create_agent."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from spanguard import semconv as sc
from spanguard.guardrails import RetryPolicy
from spanguard.plugins.langchain import ResilientChatModel, SpanguardCallbackHandler
from spanguard.testing import SpanCapture
from tests.guardrails.fakes import APIStatusError, FakeClock, RateLimitError
from tests.plugins.fakes import ScriptedChatModel


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


def weather_call() -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": "get_weather", "id": "call-1",
                                               "args": {"city": "Oslo"}}])


def build_graph(model: ResilientChatModel) -> Any:
    bound = model.bind_tools([get_weather])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    graph.add_edge("agent", END)
    return graph.compile()


def test_streamed_tool_calling_agent_through_the_wrapper(cap: SpanCapture) -> None:
    clock = FakeClock()
    primary = ScriptedChatModel(model_name="gpt-x", script=[
        RateLimitError(), weather_call(), APIStatusError("Bad Gateway", 502),
        APIStatusError("Bad Gateway", 502)])
    fallback = ScriptedChatModel(model_name="claude-y", script=["It is sunny in Oslo."])
    model = ResilientChatModel(models=[primary, fallback], retry=RetryPolicy(max_attempts=2),
                               sleep=clock.sleep, clock=clock)
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    graph = build_graph(model)

    tokens: list[str] = []
    for chunk, meta in graph.stream({"messages": [HumanMessage("weather in Oslo?")]},
                                    {"callbacks": [handler]}, stream_mode="messages"):
        if isinstance(chunk, AIMessageChunk) and meta["langgraph_node"] == "agent":
            tokens.append(str(chunk.content))

    # the final answer streamed once, token by token (not once more per attempt)
    assert "".join(tokens) == "It is sunny in Oslo."
    # tools were bound on both routes and every attempt carried them
    assert {tuple(c["tools"]) for c in primary.calls + fallback.calls} == {("get_weather",)}

    root = cap.tree()
    agent_turns = root.find_all("chat gpt-x")
    routers = [s for s in agent_turns if sc.ROUTING_REASON in s.attributes]
    assert [r.attributes[sc.ROUTING_REASON] for r in routers] == ["normal", "failover"]
    assert [r.attributes[sc.ROUTING_ATTEMPTS] for r in routers] == [2, 3]
    second = routers[1]
    assert [(c.name, c.attributes.get(sc.ERROR_TYPE)) for c in second.children] == [
        ("chat gpt-x", "server_error"), ("chat gpt-x", "server_error"),
        ("chat claude-y", None)]
    assert root.find("execute_tool get_weather") is not None


def test_drops_into_create_agent_unchanged(cap: SpanCapture) -> None:
    clock = FakeClock()
    primary = ScriptedChatModel(model_name="gpt-x", script=[
        APIStatusError("Service Unavailable", 503)] * 2)
    fallback = ScriptedChatModel(model_name="claude-y",
                                 script=[weather_call(), "Sunny in Oslo."])
    model = ResilientChatModel(models=[primary, fallback],
                               retry=RetryPolicy(max_attempts=1, circuit_failures=1),
                               sleep=clock.sleep, clock=clock)
    agent = create_agent(model, tools=[get_weather])
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    result = agent.invoke({"messages": [HumanMessage("weather in Oslo?")]},
                          {"callbacks": [handler]})
    messages = result["messages"]
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "sunny in Oslo"
    assert messages[-1].content == "Sunny in Oslo."
    # first turn fails over; the second skips the primary, whose circuit is now open
    assert len(primary.calls) == 1
    reasons = [(s.attributes[sc.ROUTING_REASON], s.attributes.get(sc.ROUTING_DETAIL),
                s.attributes[sc.ROUTING_STATUS]) for s in cap.tree().walk()
               if sc.ROUTING_REASON in s.attributes]
    assert reasons == [("failover", None, "degraded"), ("failover", "circuit_open", "degraded")]
