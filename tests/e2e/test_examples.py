"""Every example runs, offline, and does what its header says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spanguard.guardrails import Policy
from spanguard.store import TraceStore
from tests.conftest import repo_root
from tests.otlp_receiver import otlp_receiver

EXAMPLES = repo_root() / "examples"


def run_example(name: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, SPANGUARD_HOME=str(home), **env)
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], env=environment,
                            cwd=home.parent, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_every_example_is_covered_here() -> None:
    tested = {"langgraph_agent.py", "llamaindex_rag.py", "fallback_retries.py",
              "mcp_wrap_server.py", "export_phoenix.py", "export_langfuse.py", "demo.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_policy_file_with_every_option_loads(tmp_path: Path) -> None:
    policy = Policy.from_file(EXAMPLES / "policy.toml")
    assert policy.name == "support-prod"
    assert policy.loop_budget is not None and policy.loop_budget.max_input_tokens == 200000
    assert policy.holds is not None and policy.verify is not None
    assert [r.name for r in policy.holds.reviewers.all] == ["maria", "ops-lead"]
    assert policy.holds.read_only == ("calculate", "list_*") and policy.audit is not None
    assert policy.retry is not None and policy.retry.max_attempts == 3
    assert len(policy.window_budgets) == 1 and policy.tool_loop is not None
    assert policy.redaction_patterns == {"order_id": "ORD-[0-9]{6}"}


def test_langgraph_quickstart(spanguard_home: Path) -> None:
    result = run_example("langgraph_agent.py", spanguard_home)
    assert "It is sunny" in result.stdout
    assert "invoke_agent weather-agent [AGENT]" in result.stderr  # the console tree
    (summary,) = TraceStore.in_home(spanguard_home).traces()
    assert summary.root_name == "invoke_agent weather-agent" and summary.input_tokens == 480


def test_llamaindex_rag(spanguard_home: Path) -> None:
    result = run_example("llamaindex_rag.py", spanguard_home)
    assert "retrieval handbook [RETRIEVER]" in result.stderr
    spans = TraceStore.in_home(spanguard_home).spans()
    retrieval = next(s for s in spans if s.name == "retrieval handbook")
    assert retrieval.attributes["spanguard.retrieval.candidate_count"] == 2


def test_fallback_retries(spanguard_home: Path) -> None:
    result = run_example("fallback_retries.py", spanguard_home)
    assert "answer from claude-3-5-haiku (quota_throttled)" in result.stdout
    spans = TraceStore.in_home(spanguard_home).spans()
    wrapper = next(s for s in spans if s.attributes.get("spanguard.routing.reason"))
    assert wrapper.attributes["spanguard.routing.requested_route"] == "gpt-4o"
    assert wrapper.attributes["spanguard.routing.selected_route"] == "claude-3-5-haiku"
    attempts = [s for s in spans if s.parent_span_id == wrapper.span_id]
    assert [s.status for s in attempts] == ["ERROR", "ERROR", "UNSET"]
    assert {s.attributes["error.type"] for s in attempts[:2]} == {"quota_throttled"}


def test_wrapping_an_mcp_server(spanguard_home: Path) -> None:
    result = run_example("mcp_wrap_server.py", spanguard_home)
    assert "get_current_time, convert_time" in result.stdout
    spans = TraceStore.in_home(spanguard_home).spans()
    caller = next(s for s in spans if s.name == "execute_tool get_current_time")
    proxied = next(s for s in spans if s.name == "tools/call get_current_time")
    assert proxied.trace_id == caller.trace_id


@pytest.mark.parametrize(
    ("example", "env", "path", "outcome_path"),
    [
        ("export_phoenix.py", {"PHOENIX_COLLECTOR_ENDPOINT": "{url}"}, "/v1/traces",
         "/v1/session_annotations"),
        ("export_langfuse.py", {"LANGFUSE_HOST": "{url}", "LANGFUSE_PUBLIC_KEY": "pk-lf-1",
                                "LANGFUSE_SECRET_KEY": "sk-lf-1"},
         "/api/public/otel/v1/traces", "/api/public/scores"),
    ],
)
def test_export_examples_reach_their_backend(spanguard_home: Path, example: str,
                                             env: dict[str, str], path: str,
                                             outcome_path: str) -> None:
    with otlp_receiver() as receiver:
        run_example(example, spanguard_home,
                    **{k: v.format(url=receiver.endpoint) for k, v in env.items()})
    assert set(receiver.requests) == {path, outcome_path}
    names = {span["name"] for span in receiver.spans}
    assert "invoke_agent weather-agent" in names and "execute_tool weather" in names
    root = next(s for s in receiver.spans if s["name"] == "invoke_agent weather-agent")
    outcomes = [json.loads(body) for request, body in zip(receiver.requests, receiver.bodies,
                                                           strict=True)
                if request == outcome_path]
    if outcome_path == "/api/public/scores":  # Langfuse: a score per field, on the session
        assert {(o["name"], o["value"]) for o in outcomes} == {("user_outcome", "accepted"),
                                                               ("user_rating", 5.0)}
        assert {o["sessionId"] for o in outcomes} == {root["attributes"]["session.id"]}
        assert root["attributes"]["langfuse.trace.tags"] == ["quickstart"]
    else:  # Phoenix: one HUMAN annotation on the session
        (annotation,) = [a for o in outcomes for a in o["data"]]
        assert annotation["session_id"] == root["attributes"]["session.id"]
        assert annotation["result"] == {"label": "accepted", "score": 5}


def test_the_demo_tells_the_whole_story(spanguard_home: Path) -> None:
    result = run_example("demo.py", spanguard_home)
    out = result.stdout
    assert re.search(r"reviewer 'maria' runs: \S*spanguard .*holds approve hold_", out)
    assert "docs: answer the annual-plan refund question in the FAQ" in out  # git log -1
    assert "LoopBudgetExceeded: loop budget exceeded" in out
    assert "checker=maria (signed)  status=executed" in out
    assert "Audit log proven against the reviewer's key: True" in out
    store = TraceStore.in_home(spanguard_home)
    runs = [t for t in store.traces() if t.root_name == "invoke_agent support_agent"]
    assert len(runs) == 2
    story = max(runs, key=lambda t: -t.start_time)  # the first run: the commit story
    spans = {s.name: s for s in store.trace(story.trace_id)}
    commit = spans["tools/call git_commit"]
    assert commit.attributes["spanguard.verification.status"] == "verified"
    assert commit.parent_span_id == spans["execute_tool git_commit"].span_id
    engine = spans["RetrieverQueryEngine"]  # LlamaIndex, inside the LangGraph tool
    assert engine.parent_span_id == spans["execute_tool search_kb"].span_id
    assert spans["retrieval support_kb"].parent_span_id == engine.span_id
    assert spans["text_completion gpt-4o-mini"].trace_id == story.trace_id
    assert spans["guardrail holds"].attributes["spanguard.guardrail.decision"] == "hold"

    # The "Next" commands work pasted into a new shell: no venv on PATH, no SPANGUARD_HOME.
    hints = out[out.index("\nNext, from "):].splitlines()[2:]
    commands = [re.split(r"\s{2,}", line.strip())[0] for line in hints if line.strip()]
    assert commands[-1] == "make phoenix" and len(commands) == 6
    assert commands[1].endswith(f" traces show {story.trace_id[:12]}")
    for command in commands[:-1]:
        pasted = subprocess.run(["/bin/sh", "-c", command], cwd=spanguard_home.parent,
                                env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                                text=True, timeout=120, check=False)
        assert pasted.returncode == 0, f"{command}: {pasted.stderr}"
