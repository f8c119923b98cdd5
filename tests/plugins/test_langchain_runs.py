"""One handler, many runs: concurrency, run-level metadata, hashing, content capture."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

import spanguard
import spanguard.config
from spanguard import semconv as sc
from spanguard.hashing import KeyedHasher
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import ScriptedChatModel, add, multiply, react_graph

SHAPE = ("invoke_agent LangGraph", [
    ("agent", [("chat gpt-4o-mini", [])]),
    ("tools", [("execute_tool add", [])]),
    ("agent", [("chat gpt-4o-mini", [])]),
    ("tools", [("execute_tool multiply", [])]),
    ("agent", [("chat gpt-4o-mini", [])]),
])


async def test_500_concurrent_runs_on_one_handler(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=2, tool_names=["add", "multiply"]),
                        [add, multiply])
    handler = SpanguardCallbackHandler(cap.tracer_provider)

    async def one(i: int) -> None:
        await graph.ainvoke({"messages": [HumanMessage(f"run {i}")]},
                            {"callbacks": [handler], "configurable": {"thread_id": f"t{i}"}})

    await asyncio.gather(*(one(i) for i in range(500)))
    trees = cap.trees()
    assert len(trees) == 500
    assert len({tree.span.trace_id for tree in trees}) == 500
    threads = set()
    for tree in trees:
        assert tree.shape() == SHAPE
        conversation = tree.attributes[sc.GEN_AI_CONVERSATION_ID]
        threads.add(conversation)
        for node in tree.walk():
            assert node.span.trace_id == tree.span.trace_id
            assert node.attributes[sc.GEN_AI_CONVERSATION_ID] == conversation
        assert tree.attributes[sc.RUN_MODEL_CALLS] == 3
    hasher = spanguard.config.current().hasher  # the handler's default: configure()'s
    assert threads == {hasher(f"t{i}") for i in range(500)}
    assert len(handler._tree) == 0
    assert handler.telemetry_errors == 0


METADATA = {"model_version": "m-7", "prompt_version": "p-3", "feature_flag_state": "beta=on",
            "user_id": "alice@example.com", "tenant_id": "acme-corp"}


def test_run_metadata_is_copied_onto_every_span_and_ids_are_hashed(cap: SpanCapture) -> None:
    hasher = KeyedHasher(b"k" * 32)
    graph = react_graph(ScriptedChatModel(tool_steps=1), [add])
    graph.invoke({"messages": [HumanMessage("hi")]}, {
        "callbacks": [SpanguardCallbackHandler(cap.tracer_provider, hasher=hasher)],
        "metadata": METADATA, "configurable": {"thread_id": "thread-9"}})
    nodes = list(cap.tree().walk())
    assert len(nodes) == 7
    for node in nodes:
        attrs = node.attributes
        assert attrs[sc.MODEL_VERSION] == "m-7", node.name
        assert attrs[sc.PROMPT_VERSION] == "p-3"
        assert attrs[sc.FEATURE_FLAG_STATE] == "beta=on"
        assert attrs[sc.GEN_AI_CONVERSATION_ID] == attrs[sc.OI_SESSION_ID] == hasher("thread-9")
        assert attrs[sc.USER_HASH] == hasher("alice@example.com")
        assert attrs[sc.TENANT_HASH] == hasher("acme-corp")
        flat = json.dumps(attrs, default=str)
        assert "alice" not in flat and "acme-corp" not in flat and "thread-9" not in flat
    # The 0.x names, one more release, on the root only (on every span they would double
    # the cost of three attributes per span).
    root, *below = nodes
    assert {k: root.attributes[k] for k in METADATA if k in root.attributes} == {
        "model_version": "m-7", "prompt_version": "p-3", "feature_flag_state": "beta=on"}
    assert not [k for node in below for k in node.attributes if k in METADATA]


def test_explicit_conversation_id_wins_over_thread_id(cap: SpanCapture) -> None:
    hasher = KeyedHasher(b"k" * 32)
    ScriptedChatModel(tool_steps=0).invoke("hi", {
        "callbacks": [SpanguardCallbackHandler(cap.tracer_provider, hasher=hasher)],
        "metadata": {"session_id": "sess-1"}, "configurable": {"thread_id": "thread-1"}})
    assert cap.tree().attributes[sc.GEN_AI_CONVERSATION_ID] == hasher("sess-1")
    assert cap.tree().attributes[sc.OI_SESSION_ID] == hasher("sess-1")


def test_conversation_ids_stay_raw_only_when_the_operator_asks(cap: SpanCapture) -> None:
    handle = spanguard.configure(local_store=False, hash_key="x" * 32,
                                 raw_conversation_ids=True)
    ScriptedChatModel(tool_steps=0).invoke("hi", {
        "callbacks": [SpanguardCallbackHandler(cap.tracer_provider)],
        "metadata": {"user_id": "bob", "thread_id": "thread-1"}})
    attrs = cap.tree().attributes
    assert attrs[sc.GEN_AI_CONVERSATION_ID] == attrs[sc.OI_SESSION_ID] == "thread-1"
    assert attrs[sc.USER_HASH] == handle.hasher("bob")  # user ids are hashed either way
    handle.shutdown()


def test_default_hasher_comes_from_configure(cap: SpanCapture) -> None:
    handle = spanguard.configure(local_store=False, hash_key="x" * 32)
    ScriptedChatModel(tool_steps=0).invoke("hi", {
        "callbacks": [SpanguardCallbackHandler(cap.tracer_provider)],
        "metadata": {"user_id": "bob"}})
    assert cap.tree().attributes[sc.USER_HASH] == handle.hasher("bob")
    handle.shutdown()


def _content_attrs(cap: SpanCapture, **kwargs: Any) -> list[dict[str, Any]]:
    graph = react_graph(ScriptedChatModel(tool_steps=1), [add])
    graph.invoke({"messages": [HumanMessage("secret question")]},
                 {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider, **kwargs)]})
    return [node.attributes for node in cap.tree().walk()]


def test_content_is_off_by_default(cap: SpanCapture) -> None:
    for attrs in _content_attrs(cap):
        flat = json.dumps(attrs, default=str)
        assert "secret question" not in flat
        assert "the answer is 42" not in flat
        assert sc.GEN_AI_INPUT_MESSAGES not in attrs
        assert sc.GEN_AI_TOOL_CALL_ARGUMENTS not in attrs


def _assert_content(attrs_list: list[dict[str, Any]]) -> None:
    chats = [a for a in attrs_list if a.get(sc.OPENINFERENCE_SPAN_KIND) == "LLM"]
    first = json.loads(chats[0][sc.GEN_AI_INPUT_MESSAGES])
    assert first == [{"role": "user", "parts": [{"type": "text",
                                                  "content": "secret question"}]}]
    assert chats[0][f"{sc.OI_LLM_INPUT_MESSAGES}.0.{sc.OI_MESSAGE_CONTENT}"] == "secret question"
    assert chats[0][f"{sc.OI_LLM_INPUT_MESSAGES}.0.{sc.OI_MESSAGE_ROLE}"] == "user"
    call = json.loads(chats[0][sc.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]
    assert call == {"type": "tool_call", "id": "call_0_0", "name": "add",
                    "arguments": {"a": 0, "b": 0}}
    answer = json.loads(chats[1][sc.GEN_AI_OUTPUT_MESSAGES])[0]
    assert answer["role"] == "assistant"
    assert answer["parts"] == [{"type": "text", "content": "the answer is 42"}]
    assert chats[1][f"{sc.OI_LLM_OUTPUT_MESSAGES}.0.{sc.OI_MESSAGE_CONTENT}"] == (
        "the answer is 42")
    tool = next(a for a in attrs_list if a.get(sc.OPENINFERENCE_SPAN_KIND) == "TOOL")
    assert json.loads(tool[sc.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"a": 0, "b": 0}
    assert tool[sc.GEN_AI_TOOL_CALL_RESULT] == "0"


def test_content_on_with_the_flag(cap: SpanCapture) -> None:
    _assert_content(_content_attrs(cap, capture_content=True))


def test_content_on_with_the_otel_environment_switch(cap: SpanCapture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    _assert_content(_content_attrs(cap))


def test_flag_overrides_the_environment(cap: SpanCapture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    for attrs in _content_attrs(cap, capture_content=False):
        assert "secret question" not in json.dumps(attrs, default=str)


def test_telemetry_bug_never_reaches_the_agent(cap: SpanCapture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    handler = SpanguardCallbackHandler(cap.tracer_provider)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("bookkeeping bug")

    monkeypatch.setattr(handler._tree, "start", broken)
    graph = react_graph(ScriptedChatModel(tool_steps=1), [add])
    result = graph.invoke({"messages": [HumanMessage("hi")]}, {"callbacks": [handler]})
    assert result["messages"][-1].content == "the answer is 42"
    assert handler.telemetry_errors > 0


def test_abandoned_runs_are_reaped(cap: SpanCapture) -> None:
    from uuid import uuid4

    handler = SpanguardCallbackHandler(cap.tracer_provider, max_open_runs=10)
    for _ in range(50):  # starts whose end never arrives (e.g. a cancelled task)
        handler.on_chain_start({}, {}, run_id=uuid4(), name="lost")
    assert len(handler._tree) <= 11
    assert handler._tree.reaped >= 39
    handler._tree.abandon_all("test over")  # the ≤ 11 still open end too
