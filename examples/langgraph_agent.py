"""A LangGraph ReAct agent traced by spanguard, offline: run it and read the tree.

    python examples/langgraph_agent.py

The chat model is a scripted fake (no network, no key); everything else is the
real LangGraph `StateGraph` + `ToolNode`. The tree is printed by the console
exporter and stored in the local store (``spanguard traces`` shows it again).
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import spanguard
from spanguard.plugins.langchain import SpanguardCallbackHandler


class WeatherModel(BaseChatModel):
    """Asks the weather tool once, then answers; reports usage like a real provider."""

    model: str = "gpt-4o-mini"

    @property
    def _llm_type(self) -> str:
        return "example-chat"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        usage = {"input_tokens": 120 * len(messages), "output_tokens": 20,
                 "total_tokens": 120 * len(messages) + 20}
        if not any(isinstance(m, ToolMessage) for m in messages):
            reply = AIMessage(content="", tool_calls=[
                {"name": "weather", "args": {"city": "Lisbon"}, "id": "call_1"}],
                usage_metadata=usage)  # type: ignore[arg-type]
        else:
            reply = AIMessage(content=f"It is {messages[-1].content} in Lisbon.",
                              usage_metadata=usage)  # type: ignore[arg-type]
        reply.response_metadata = {"model_name": self.model}
        return ChatResult(generations=[ChatGeneration(message=reply)])


@tool
def weather(city: str) -> str:
    """Current weather in a city."""
    return "sunny, 24°C"


def run(handle: spanguard.SpanguardHandle) -> str:
    """Run the agent once with spanguard's handler on ``handle``'s provider."""
    model = WeatherModel()

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([weather]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile(name="weather-agent")

    result = graph.invoke(
        {"messages": [HumanMessage("What's the weather in Lisbon?")]},
        {"callbacks": [SpanguardCallbackHandler(tracer_provider=handle.tracer_provider)],
         "configurable": {"thread_id": "demo-thread"},
         "metadata": {"user_id": "alice@example.com", "prompt_version": "v3"}})
    return str(result["messages"][-1].content)


def main() -> None:
    handle = spanguard.configure(console=True)
    print(run(handle))
    handle.shutdown()


if __name__ == "__main__":
    main()
