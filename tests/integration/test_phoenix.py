"""The demo's traces and a capture-on run, exported over OTLP to a real Phoenix and read back
through its API."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from opentelemetry.trace import format_trace_id

import spanguard
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.store import TraceStore
from tests.conftest import repo_root
from tests.integration.phoenix_server import (
    phoenix_get,
    phoenix_spans,
    phoenix_traces,
    running_phoenix,
)
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_phoenix(tmp_path_factory.mktemp("phoenix")) as base:
        yield base


def test_demo_trace_in_phoenix_has_the_same_tree(phoenix: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = dict(os.environ, SPANGUARD_HOME=str(home),
               OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{phoenix}/v1/traces")
    result = subprocess.run([sys.executable, str(repo_root() / "examples" / "demo.py")],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stderr

    local = TraceStore.in_home(home).spans()
    remote = phoenix_spans(phoenix, expected=len(local))
    assert len(remote) >= len(local) > 0
    by_id = {span["context"]["span_id"]: span for span in remote}
    for mine in local:
        theirs = by_id[mine.span_id]
        assert theirs["name"] == mine.name
        assert theirs["context"]["trace_id"] == mine.trace_id
        assert theirs["parent_id"] == mine.parent_span_id
        kind = mine.attributes.get("openinference.span.kind")
        if kind:
            assert theirs["span_kind"] == kind  # Phoenix classifies it as we labelled it
        for key in ("llm.token_count.prompt", "llm.token_count.completion", "llm.cost.total"):
            if key in mine.attributes:
                assert theirs["attributes"][key] == pytest.approx(mine.attributes[key])
    kinds = {span["span_kind"] for span in remote}
    assert {"AGENT", "CHAIN", "LLM", "TOOL", "RETRIEVER", "EMBEDDING", "GUARDRAIL"} <= kinds
    # The MCP proxy's spans (another process) sit in the agent's trace, under its tool span.
    proxied = next(span for span in remote if span["name"] == "tools/call git_commit")
    parent = by_id[proxied["parent_id"]]
    assert parent["name"] == "execute_tool git_commit"
    assert proxied["context"]["trace_id"] == parent["context"]["trace_id"]
    assert proxied["attributes"]["spanguard.verification.status"] == "verified"
    agents = [span for span in remote if span["parent_id"] is None
              and span["span_kind"] == "AGENT"]
    assert len(agents) == 2
    traces = phoenix_traces(phoenix)
    for agent in agents:
        trace_id = agent["context"]["trace_id"]
        in_trace = [span for span in local if span.trace_id == trace_id]
        # The truth: what the run's models reported, as spanguard's run accounting adds it
        # up on each span tree's root (the LangGraph run, the LlamaIndex query in its tool).
        roots = [s.attributes for s in in_trace if "spanguard.run.model_calls" in s.attributes]
        true_in = sum(a["spanguard.run.input_tokens"] for a in roots)
        true_out = sum(a["spanguard.run.output_tokens"] for a in roots)
        true_cost = sum(a["spanguard.run.cost_usd"] for a in roots)
        assert true_in > 0 and true_cost > 0
        # Phoenix's own trace totals (it sums its LLM spans) are exactly that: no root
        # repeats them in the vocabulary it sums.
        assert traces[trace_id]["token_count_prompt"] == true_in
        assert traces[trace_id]["token_count_completion"] == true_out
        llm = [span["attributes"] for span in remote if span["span_kind"] == "LLM"
               and span["context"]["trace_id"] == trace_id]
        assert sum(a.get("llm.cost.total", 0) for a in llm) == pytest.approx(true_cost)
        # (Phoenix shows the invoke_agent root's gen_ai.usage.* as the agent's tokens, and
        # does not add an AGENT span's to the trace: the totals above are its own.)
    # Model calls, embeddings and retrievals are CLIENT spans, with well-known providers.
    chat = next(span for span in local if span.name == "chat gpt-4o-mini")
    assert chat.kind == "CLIENT" and chat.attributes["llm.system"]

    # The user's outcome becomes a Phoenix annotation on the run's trace.
    story = next(span for span in local if span.name == "tools/call git_commit").trace_id
    handle = spanguard.configure(preset="phoenix", otlp_endpoint=f"{phoenix}/v1/traces",
                                 home=tmp_path / "outcome-home", local_store=False)
    spanguard.record_outcome(trace_id=story, action="accepted", rating=5,
                             feedback="solved, thanks - ann@example.com")
    handle.shutdown()
    deadline = time.monotonic() + 30
    while True:
        found = phoenix_get(phoenix, f"/v1/projects/default/trace_annotations?trace_ids={story}")
        if found["data"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    (annotation,) = found["data"]
    assert annotation["name"] == "user_outcome" and annotation["annotator_kind"] == "HUMAN"
    assert annotation["result"]["label"] == "accepted" and annotation["result"]["score"] == 5
    assert annotation["result"]["explanation"] == "solved, thanks - [REDACTED:email]"


def test_a_capture_on_run_renders_its_conversation_in_phoenix(phoenix: str,
                                                              tmp_path: Path) -> None:
    """Each LLM span shows the messages new to its call; following the history links
    through Phoenix's spans gives back everything the model was sent, redacted."""
    handle = spanguard.configure(otlp_endpoint=f"{phoenix}/v1/traces", local_store=False,
                                 home=tmp_path / "home", service_name="capture-run")
    handler = SpanguardCallbackHandler(handle.tracer_provider, capture_content=True)
    with handle.tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        state = react_graph(ScriptedChatModel(tool_steps=5), [add]).invoke(
            {"messages": [SystemMessage("be brief"),
                          HumanMessage("add the numbers and mail jane.roe@example.com")]},
            {"callbacks": [handler]})
    handle.shutdown()
    trace_id = format_trace_id(caller.get_span_context().trace_id)
    deadline = time.monotonic() + 30
    while True:  # the default project also holds the demo's spans: keep this run's
        run = [span for span in phoenix_spans(phoenix) if span["span_kind"] == "LLM"
               and span["context"]["trace_id"] == trace_id]
        if len(run) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(run) == 6
    last = max(run, key=lambda span: span["start_time"])
    by_id = {span["context"]["span_id"]: span for span in run}

    def messages(span: dict[str, Any], side: str) -> list[tuple[str, str]]:
        attributes = span["attributes"]
        out = []
        for index in itertools.count():
            role = attributes.get(f"llm.{side}_messages.{index}.message.role")
            if role is None:
                return out
            out.append((role, attributes.get(f"llm.{side}_messages.{index}.message.content",
                                             "")))
        return out

    def conversation(span: dict[str, Any]) -> list[tuple[str, str]]:
        history = span["attributes"].get("spanguard.content.history.messages", 0)
        earlier: list[tuple[str, str]] = []
        if history:
            before = by_id[span["attributes"]["spanguard.content.history.span_id"]]
            earlier = (conversation(before) + messages(before, "output"))[:history]
        return earlier + messages(span, "input")

    for span in run:
        assert messages(span, "output"), "every LLM span shows its answer"
        assert messages(span, "input") or span["attributes"].get(
            "spanguard.content.history.messages")
    sent = state["messages"][:-1]  # what the last call was sent
    roles = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
    assert conversation(last) == [
        (roles[m.type], str(m.content).replace("jane.roe@example.com", "[REDACTED:email]"))
        for m in sent]
    assert messages(last, "output") == [("assistant", "the answer is 42")]
