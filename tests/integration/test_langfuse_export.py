"""The `langfuse` preset: the right path and Basic auth, and attributes Langfuse maps.

No Langfuse server can run here, so a local OTLP receiver stands in for it and the
assertions follow Langfuse's documented OpenTelemetry mapping: observation type from
`openinference.span.kind` (then `gen_ai.operation.name`), model from
`gen_ai.request.model`, usage from `gen_ai.usage.*`, cost from `gen_ai.usage.cost`,
session and user from `session.id` / `user.id` on the root span.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from langchain_core.messages import HumanMessage

import spanguard
from spanguard import attributes as attrs
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.spantree import SpanTree
from tests.otlp_receiver import otlp_receiver
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

# Langfuse's ObservationTypeMapperRegistry, as documented: OpenInference first.
OPENINFERENCE_TO_LANGFUSE = {"CHAIN": "CHAIN", "RETRIEVER": "RETRIEVER", "LLM": "GENERATION",
                             "EMBEDDING": "EMBEDDING", "AGENT": "AGENT", "TOOL": "TOOL",
                             "GUARDRAIL": "GUARDRAIL"}


def test_langfuse_preset_sends_path_auth_and_mappable_attributes() -> None:
    with otlp_receiver() as receiver:
        handle = spanguard.configure(preset="langfuse", langfuse_host=receiver.endpoint,
                                     langfuse_public_key="pk-lf-test",
                                     langfuse_secret_key="sk-lf-test", local_store=False)
        tree = SpanTree(handle.tracer_provider.get_tracer("test"))
        identity = attrs.run_identity_attributes(conversation_id="thread-7", hasher=handle.hasher,
                                                 user_hash=handle.hasher("alice"))
        tree.start("run", None, attrs.agent_span_name("support"),
                   attrs.agent_attributes("support"), run_attributes=identity)
        llm = tree.start("llm", "run", attrs.chat_span_name("gpt-4o"),
                         attrs.model_attributes("gpt-4o", "openai"))
        llm.span.set_attributes(attrs.usage_attributes(1200, 80))
        llm.span.set_attributes(attrs.cost_attributes(handle.prices.cost("gpt-4o", 1200, 80)))
        tree.end("llm")
        tree.start("tool", "run", attrs.tool_span_name("search"),
                   attrs.tool_attributes("search", "call_1"))
        tree.end("tool")
        tree.end("run")
        handle.shutdown()

    assert set(receiver.requests) == {"/api/public/otel/v1/traces"}
    for headers in receiver.headers:
        scheme, token = headers["authorization"].split()
        assert scheme == "Basic"
        assert base64.b64decode(token).decode() == "pk-lf-test:sk-lf-test"

    by_name = {span["name"]: span for span in receiver.spans}
    types = {name: OPENINFERENCE_TO_LANGFUSE[span["attributes"]["openinference.span.kind"]]
             for name, span in by_name.items()}
    assert types == {"invoke_agent support": "AGENT", "chat gpt-4o": "GENERATION",
                     "execute_tool search": "TOOL"}
    generation = by_name["chat gpt-4o"]["attributes"]
    assert generation["gen_ai.request.model"] == "gpt-4o"
    assert generation["gen_ai.usage.input_tokens"] == 1200
    assert generation["gen_ai.usage.output_tokens"] == 80
    assert generation["gen_ai.usage.cost"] > 0
    root = by_name["invoke_agent support"]["attributes"]
    assert root["session.id"] == handle.hasher("thread-7")  # Langfuse groups by the keyed hash
    assert root["user.id"].startswith("hmac:") and "alice" not in root["user.id"]
    assert by_name["execute_tool search"]["attributes"]["gen_ai.operation.name"] == "execute_tool"


def test_langfuse_generations_carry_their_new_messages_in_the_genai_shape() -> None:
    """With capture on, every generation Langfuse receives holds the GenAI JSON of the
    messages new to its call (role and parts) and its answer, redacted; the earlier
    ones are a link away (spanguard.content.history.*), so the conversation rebuilds."""
    with otlp_receiver() as receiver:
        handle = spanguard.configure(preset="langfuse", langfuse_host=receiver.endpoint,
                                     langfuse_public_key="pk-lf-test",
                                     langfuse_secret_key="sk-lf-test", local_store=False)
        handler = SpanguardCallbackHandler(handle.tracer_provider, capture_content=True)
        state = react_graph(ScriptedChatModel(tool_steps=3), [add]).invoke(
            {"messages": [HumanMessage("sum it up for bob@example.com")]},
            {"callbacks": [handler]})
        handle.shutdown()

    generations = {span["span_id"]: span["attributes"] for span in receiver.spans
                   if span["attributes"].get("openinference.span.kind") == "LLM"}
    assert len(generations) == 4

    def conversation(attributes: dict[str, Any]) -> list[dict[str, Any]]:
        history = attributes.get("spanguard.content.history.messages", 0)
        earlier: list[dict[str, Any]] = []
        if history:
            before = generations[attributes["spanguard.content.history.span_id"]]
            earlier = (conversation(before)
                       + json.loads(before["gen_ai.output.messages"]))[:history]
        return earlier + json.loads(attributes["gen_ai.input.messages"])

    for attributes in generations.values():
        for message in [*json.loads(attributes["gen_ai.input.messages"]),
                        *json.loads(attributes["gen_ai.output.messages"])]:
            assert set(message) <= {"role", "parts", "finish_reason"} and message["parts"]
            assert all("type" in part for part in message["parts"])
    last = max(generations.values(),
               key=lambda a: a.get("spanguard.content.history.messages", 0))
    rebuilt = conversation(last)
    assert [m["role"] for m in rebuilt] == ["user", "assistant", "tool", "assistant", "tool",
                                            "assistant", "tool"]
    assert len(rebuilt) == len(state["messages"]) - 1
    assert rebuilt[0]["parts"][0]["content"] == "sum it up for [REDACTED:email]"
