"""One trace across frameworks: a LangGraph agent whose tool queries a LlamaIndex index.

The LangGraph handler makes the ``execute_tool`` span the current OpenTelemetry
span while the tool body runs; the LlamaIndex plugin starts its root spans under
whatever span is current. Together: RETRIEVER under TOOL under AGENT, one trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from llama_index.core.llms import MockLLM

from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.testing import SpanCapture, SpanNode
from tests.plugins._llama_index_fixtures import build_index, instrumented

QUESTION = "How long do refunds take?"


class ScriptedChatModel(BaseChatModel):
    """Calls ``lookup_policy`` once, then answers with what the tool returned."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(content=f"The handbook says: {last.content}")
        else:
            reply = AIMessage(content="", tool_calls=[{
                "name": "lookup_policy", "args": {"question": QUESTION}, "id": "call_1"}])
        return ChatResult(generations=[ChatGeneration(message=reply)])


def _path_to(node: SpanNode, kind: str) -> list[SpanNode] | None:
    """Root-to-node path to the first span of ``kind`` (depth first)."""
    if node.kind == kind:
        return [node]
    for child in node.children:
        below = _path_to(child, kind)
        if below is not None:
            return [node, *below]
    return None


def test_retrieval_in_a_langgraph_tool_is_under_the_tool_span(cap: SpanCapture) -> None:
    engine = build_index(index_id="handbook").as_query_engine(llm=MockLLM())

    @tool
    def lookup_policy(question: str) -> str:
        """Look up the company handbook."""
        return str(engine.query(question))

    agent = create_agent(ScriptedChatModel(), tools=[lookup_policy])
    handler = SpanguardCallbackHandler(tracer_provider=cap.tracer_provider)
    with instrumented(cap):
        result = agent.invoke({"messages": [("user", QUESTION)]},
                              config={"callbacks": [handler]})
    assert "The handbook says" in result["messages"][-1].content

    root = cap.tree()  # exactly one tree: nothing from LlamaIndex escaped it
    assert root.kind == "AGENT"
    path = _path_to(root, "RETRIEVER")
    assert path is not None, cap.render()
    kinds = [node.kind for node in path]
    assert kinds[0] == "AGENT" and kinds[-1] == "RETRIEVER"
    tool_span = next(node for node in path if node.kind == "TOOL")
    assert tool_span.name == "execute_tool lookup_policy"
    assert kinds.index("TOOL") < kinds.index("RETRIEVER")
    retrieval = path[-1]
    assert retrieval.name == "retrieval handbook"
    assert retrieval.attributes["spanguard.retrieval.candidate_count"] > 0
    assert len({node.span.trace_id for node in root.walk()}) == 1
    # The LlamaIndex query engine sits directly under the tool span.
    assert "RetrieverQueryEngine" in [child.name for child in tool_span.children]
