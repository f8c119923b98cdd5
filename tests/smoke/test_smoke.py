"""The smoke suite ``make test-matrix`` runs on every other supported Python.

One pass over each part with the real libraries, fast: every public module
imports, a policy file parses (tomllib, or tomli on 3.10), a LangGraph run and a
LlamaIndex query make their trees, the stdio proxy serves mcp-server-time, and the
demo runs. The main suite proves the details on the default Python.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from spanguard.guardrails import load_policy
from spanguard.plugins import llama_index as sg_llama
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.store import TraceStore
from spanguard.testing import SpanCapture
from tests.conftest import repo_root
from tests.plugins._llama_index_fixtures import build_index
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

PUBLIC_MODULES = [
    "spanguard", "spanguard.testing", "spanguard.cli", "spanguard.extras",
    "spanguard.guardrails", "spanguard.guardrails.stores",
    "spanguard.plugins.langchain", "spanguard.plugins.resilient",
    "spanguard.plugins.langgraph_holds", "spanguard.plugins.llama_index",
    "spanguard.mcp_bridge", "spanguard.mcp_bridge.proxy", "spanguard.mcp_bridge.cli",
    "spanguard.mcp_bridge.server", "spanguard.mcp_bridge.client",
]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_the_example_policy_file_parses() -> None:
    policy = load_policy(repo_root() / "examples" / "policy.toml")
    assert policy is not None and policy.name == "support-prod"


def test_a_langgraph_run_is_one_tree(cap: SpanCapture) -> None:
    graph = react_graph(ScriptedChatModel(tool_steps=2), [add], name="smoke-agent")
    graph.invoke({"messages": [("user", "add")]},
                 config={"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    root = cap.tree()
    assert root.name == "invoke_agent smoke-agent"
    assert len(root.find_all("execute_tool add")) == 2


def test_a_llama_index_query_is_traced(cap: SpanCapture) -> None:
    sg_llama.instrument(cap.tracer_provider)
    try:
        build_index().as_retriever(similarity_top_k=2).retrieve("refunds")
    finally:
        sg_llama.uninstrument()
    assert any(node.kind == "RETRIEVER" for tree in cap.trees() for node in tree.walk())


async def test_the_proxy_serves_mcp_server_time(spanguard_home: Path) -> None:
    command = [sys.executable, "-m", "spanguard", "mcp", "wrap", "--", sys.executable, "-m",
               "mcp_server_time", "--local-timezone", "UTC"]
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("get_current_time", {"timezone": "UTC"})
    assert not result.is_error, result
    names = {s.name for s in TraceStore.in_home(spanguard_home).spans()}
    assert "tools/call get_current_time" in names


def test_the_demo_runs(spanguard_home: Path) -> None:
    done = subprocess.run([sys.executable, str(repo_root() / "examples" / "demo.py")],
                          env=dict(os.environ), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verification=verified" in done.stdout
    assert "LoopBudgetExceeded" in done.stdout
