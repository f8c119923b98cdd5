"""Spans as the pinned OpenTelemetry GenAI conventions (v1.41.0) define them.

Checked on real runs (a LangGraph agent streaming through a LangChain chat model, a
LlamaIndex query engine, a LlamaIndex FunctionAgent), content capture on: span kinds,
operation names, provider names, the messages' JSON shape, OpenInference's
``llm.provider`` / ``llm.system``, and the schema URL every spanguard tracer names. The
message checks are written from the conventions' JSON schemas for
``gen_ai.input.messages`` / ``gen_ai.output.messages`` (ChatMessage, OutputMessage,
TextPart, ToolCallRequestPart, ToolCallResponsePart, FinishReason).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool

from spanguard import semconv as sc
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.providers import resolve_provider
from spanguard.testing import SpanCapture, capture
from tests.plugins._llama_index_agents import ToolCallingLLM
from tests.plugins._llama_index_fixtures import MeteredLLM, build_index, instrumented
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

OPERATIONS = {op.value for op in sc.OperationName}
PROVIDERS = {p.value for p in sc.ProviderName}
ROLES = {"system", "user", "assistant", "tool"}
FINISH_REASONS = {"stop", "length", "content_filter", "tool_call", "error"}
# gen-ai-spans.md: inference, embeddings and retrieval spans SHOULD be CLIENT; execute_tool
# SHOULD be INTERNAL; an in-process agent's invoke_agent is INTERNAL.
KINDS = {"chat": "CLIENT", "text_completion": "CLIENT", "embeddings": "CLIENT",
         "retrieval": "CLIENT", "execute_tool": "INTERNAL", "invoke_agent": "INTERNAL"}


def check_part(part: dict[str, Any]) -> None:
    kind = part["type"]
    if kind == "text":
        assert isinstance(part["content"], str)
    elif kind == "tool_call":  # ToolCallRequestPart: name required; id a string or null
        assert isinstance(part["name"], str) and part["name"]
        assert part.get("id") is None or isinstance(part["id"], str)
        assert "arguments" in part
    elif kind == "tool_call_response":  # ToolCallResponsePart: response required
        assert "response" in part and (part.get("id") is None or isinstance(part["id"], str))
    else:
        raise AssertionError(f"a part type spanguard never writes: {part}")


def check_messages(text: str, *, output: bool) -> list[dict[str, Any]]:
    messages = json.loads(text)
    assert isinstance(messages, list) and messages
    for message in messages:
        assert message["role"] in ROLES, message
        assert isinstance(message["parts"], list)
        for part in message["parts"]:
            check_part(part)
        if output:  # OutputMessage: finish_reason required; the fakes report known ones
            assert message["finish_reason"] in FINISH_REASONS, message
        else:
            assert "finish_reason" not in message
    return messages


def check_span(span: Any) -> None:
    attrs = span.attributes
    operation = attrs.get(sc.GEN_AI_OPERATION_NAME)
    if operation is None:
        return
    assert operation in OPERATIONS, (span.name, operation)
    assert span.kind.name == KINDS.get(operation, span.kind.name), (span.name, span.kind)
    assert span.name.split(" ")[0] == operation, span.name  # {operation} {model|tool|...}
    if operation in ("chat", "text_completion", "embeddings"):
        assert attrs[sc.GEN_AI_PROVIDER_NAME]  # required by the conventions
        assert attrs[sc.OI_LLM_PROVIDER] and attrs[sc.OI_LLM_SYSTEM]
    if sc.GEN_AI_INPUT_MESSAGES in attrs:
        check_messages(attrs[sc.GEN_AI_INPUT_MESSAGES], output=False)
    if sc.GEN_AI_OUTPUT_MESSAGES in attrs:
        check_messages(attrs[sc.GEN_AI_OUTPUT_MESSAGES], output=True)
    assert span.instrumentation_scope.schema_url == sc.SEMCONV_SCHEMA_URL, span.name


def test_a_langgraph_run_follows_the_conventions(cap: SpanCapture) -> None:
    handler = SpanguardCallbackHandler(cap.tracer_provider, capture_content=True)
    graph = react_graph(ScriptedChatModel(tool_steps=2), [add])
    for _ in graph.stream({"messages": [HumanMessage("add 1 and 2")]},
                          {"callbacks": [handler]}, stream_mode="messages"):
        pass
    spans = cap.exporter.get_finished_spans()
    for span in spans:
        check_span(span)
    chats = [s for s in spans if s.attributes.get(sc.GEN_AI_OPERATION_NAME) == "chat"]
    assert len(chats) == 3
    for chat in chats:  # streamed: time to first chunk recorded
        assert chat.attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    # The fake reports its finish reason only in response_metadata (as most integrations
    # do); the output messages carry it, in the conventions' spelling.
    reasons = [check_messages(c.attributes[sc.GEN_AI_OUTPUT_MESSAGES], output=True)[0]
               ["finish_reason"] for c in chats]
    assert reasons == ["tool_call", "tool_call", "stop"]
    assert [c.attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] for c in chats] == [
        ("tool_calls",), ("tool_calls",), ("stop",)]  # the provider's own, as reported
    tool_messages = [m for c in chats for m in json.loads(c.attributes[sc.GEN_AI_INPUT_MESSAGES])
                     if m["role"] == "tool"]
    assert tool_messages and all(m["parts"][0]["type"] == "tool_call_response"
                                 for m in tool_messages)


def test_llama_index_query_and_agent_follow_the_conventions() -> None:
    cap = capture()
    engine = build_index().as_query_engine(llm=MeteredLLM())
    with instrumented(cap, capture_content=True):
        engine.query("How long do refunds take?")
    adder = FunctionTool.from_defaults(fn=lambda a, b: a + b, name="add",
                                       description="Add two integers.")
    agent = FunctionAgent(tools=[adder], llm=ToolCallingLLM(steps=1), name="calculator")

    async def run() -> None:
        await agent.run("what is 0 + 1?")

    with instrumented(cap, capture_content=True):
        asyncio.run(run())
    spans = cap.exporter.get_finished_spans()
    for span in spans:
        check_span(span)
    operations = {s.attributes.get(sc.GEN_AI_OPERATION_NAME) for s in spans}
    assert {"text_completion", "chat", "retrieval", "embeddings", "execute_tool",
            "invoke_agent"} <= operations
    chats = [s for s in spans if s.attributes.get(sc.GEN_AI_OPERATION_NAME) == "chat"]
    inputs = [json.loads(c.attributes[sc.GEN_AI_INPUT_MESSAGES]) for c in chats]
    # The agent's second call sends the tool call and its result back, in the parts shape.
    parts = [p for messages in inputs for m in messages for p in m["parts"]]
    assert {"text", "tool_call", "tool_call_response"} <= {p["type"] for p in parts}
    outputs = [check_messages(c.attributes[sc.GEN_AI_OUTPUT_MESSAGES], output=True)[0]
               for c in chats]
    assert [m["finish_reason"] for m in outputs] == ["tool_call", "stop"]
    # OpenInference's flattened messages beside them, for Phoenix.
    assert chats[0].attributes[f"{sc.OI_LLM_INPUT_MESSAGES}.0.message.role"] == "user"


@pytest.mark.parametrize(("framework_name", "model", "expected"), [
    # LangChain's ls_provider values (ChatOpenAI, AzureChatOpenAI, ChatAnthropic,
    # ChatBedrockConverse, ChatVertexAI, ChatGoogleGenerativeAI, ChatMistralAI, ChatGroq)
    ("openai", "gpt-4o", ("openai", "openai", "openai")),
    ("azure", "gpt-4o", ("azure.ai.openai", "azure", "openai")),
    ("anthropic", "claude-3-5-haiku", ("anthropic", "anthropic", "anthropic")),
    ("amazon_bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0",
     ("aws.bedrock", "aws", "anthropic")),
    ("amazon_bedrock", "cohere.command-r-v1:0", ("aws.bedrock", "aws", "cohere")),
    ("google_vertexai", "gemini-2.0-flash", ("gcp.vertex_ai", "google", "vertexai")),
    ("google_genai", "gemini-2.0-flash", ("gcp.gen_ai", "google", "vertexai")),
    ("mistral", "mistral-large", ("mistral_ai", "mistralai", "mistralai")),
    ("groq", "llama-3.3-70b", ("groq", "groq", "groq")),
    # LlamaIndex integration packages (llama_index.llms.<name>)
    ("azure_openai", "gpt-4o", ("azure.ai.openai", "azure", "openai")),
    ("bedrock_converse", "anthropic.claude-3", ("aws.bedrock", "aws", "anthropic")),
    ("vertex", "gemini-pro", ("gcp.vertex_ai", "google", "vertexai")),
    ("gemini", "gemini-pro", ("gcp.gemini", "google", "vertexai")),
    ("mistralai", "mistral-small", ("mistral_ai", "mistralai", "mistralai")),
    ("ibm", "granite", ("ibm.watsonx.ai", "ibm", "ibm")),
    # Not in the conventions' list: kept as a custom value (allowed), never dropped.
    ("ollama", "llama3", ("ollama", "ollama", "ollama")),
    ("ScriptedChatModel", None, ("scriptedchatmodel",) * 3),
])
def test_framework_provider_names_become_the_well_known_values(
        framework_name: str, model: str | None, expected: tuple[str, str, str]) -> None:
    resolved = resolve_provider(framework_name, model)
    assert tuple(resolved) == expected
    if framework_name not in ("ollama", "ScriptedChatModel"):
        assert resolved.genai in PROVIDERS  # a value of the pinned version's list
