"""A LangGraph agent that calls mcp-server-time through ``spanguard mcp wrap``.

Shared by the mcp 1.x (langchain-mcp-adapters) and mcp 2.x (SDK client) checks:
a deterministic model asks for the time once, then answers. The agent and the
proxy write to one local store (one ``SPANGUARD_HOME``, one hash key), so the
whole story reads back as traces from it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool

import spanguard
from spanguard import semconv as sc
from spanguard.hashing import KeyedHasher
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.store import StoredSpan, TraceStore
from tests.plugins.lc_fakes import ScriptedChatModel

TOOL = "get_current_time"
HASH_KEY = "compat-check-hash-key-0123456789"
USER, TENANT, THREAD = "alice@example.com", "acme", "conv-42"


class TimeAskingModel(ScriptedChatModel):
    """Asks for the time in Paris once, then answers."""

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        if not any(isinstance(m, ToolMessage) for m in messages):
            return AIMessage(content="", tool_calls=[{
                "name": TOOL, "args": {"timezone": "Europe/Paris"}, "id": "call_time"}])
        return AIMessage(content=f"it is {messages[-1].content}")


def wrap_command(*extra: str) -> list[str]:
    """``spanguard mcp wrap -- mcp-server-time`` run by this interpreter."""
    return [sys.executable, "-m", "spanguard", "mcp", "wrap", *extra, "--",
            sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]


def server_env(home: Path) -> dict[str, str]:
    """The environment of the proxy: the agent's store and hash key (MCP clients
    pass servers a reduced environment, so it is given explicitly)."""
    env = dict(os.environ)
    env.update(SPANGUARD_HOME=str(home), SPANGUARD_HASH_KEY=HASH_KEY)
    return env


def configure(home: Path) -> spanguard.SpanguardHandle:
    os.environ.update(SPANGUARD_HOME=str(home), SPANGUARD_HASH_KEY=HASH_KEY)
    return spanguard.configure(service_name="compat-agent")


async def run_agent(handle: spanguard.SpanguardHandle, tools: Sequence[BaseTool]) -> str:
    agent = create_agent(TimeAskingModel(), list(tools), name="time_agent")
    handler = SpanguardCallbackHandler(handle.tracer_provider)
    state = await agent.ainvoke(
        {"messages": [("user", "What time is it in Paris?")]},
        config={"callbacks": [handler], "configurable": {"thread_id": THREAD},
                "metadata": {"user_id": USER, "tenant_id": TENANT}})
    return str(state["messages"][-1].content)


def assert_one_trace(home: Path) -> dict[str, StoredSpan]:
    """The agent's root, its tool span and the proxy's SERVER span are one trace.

    Returns the spans of that trace by name (the first of each name).
    """
    store = TraceStore.in_home(home)
    spans = store.spans()
    server = [s for s in spans if s.name == f"tools/call {TOOL}" and s.kind == "SERVER"]
    assert len(server) == 1, [(s.name, s.kind) for s in spans]
    call = server[0]
    trace = store.trace(call.trace_id)
    by_id = {s.span_id: s for s in trace}
    roots = [s for s in trace if s.parent_span_id is None]
    assert [r.name for r in roots] == ["invoke_agent time_agent"], [
        (s.name, s.parent_span_id) for s in trace]
    parent = by_id.get(call.parent_span_id or "")
    assert parent is not None and parent.name == f"execute_tool {TOOL}", (
        call.parent_span_id, [(s.name, s.span_id) for s in trace])
    # The chain from the server span up to the agent's root is unbroken.
    node: StoredSpan | None = call
    chain = []
    while node is not None:
        chain.append(node.name)
        node = by_id.get(node.parent_span_id or "")
    assert chain[-1] == "invoke_agent time_agent", chain
    # Hashed correlation ids arrived as baggage: the proxy span names the agent's run.
    hasher = KeyedHasher(HASH_KEY.encode())
    assert call.attributes.get(sc.USER_HASH) == hasher(USER), call.attributes
    assert call.attributes.get(sc.TENANT_HASH) == hasher(TENANT), call.attributes
    assert call.attributes.get(sc.SESSION_HASH) == hasher(THREAD), call.attributes
    return {s.name: s for s in reversed(trace)}


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)
