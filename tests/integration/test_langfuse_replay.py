"""The demo's spans, as Langfuse would ingest them: right totals, types, TTFT, input and
output, user and session.

The real demo runs (LangGraph agent, LlamaIndex query engine inside a tool, the MCP
proxy in its own process in front of mcp-server-git) with the ``langfuse`` preset and
content capture on, exporting to a local OTLP receiver that stands in for Langfuse's
endpoint; :mod:`tests.integration.langfuse_rules` applies Langfuse's ingestion rules
(written from its source) to what arrived.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import repo_root
from tests.integration import langfuse_rules
from tests.otlp_receiver import otlp_receiver

QUESTION = "Can I get a refund on my annual plan?"


def expected_type(name: str) -> str:
    """What each span of the demo is, from its name alone (not from its attributes)."""
    prefixes = (("chat ", "GENERATION"), ("text_completion ", "GENERATION"),
                ("invoke_agent ", "AGENT"), ("execute_tool ", "TOOL"),
                ("tools/call ", "TOOL"), ("retrieval ", "RETRIEVER"),
                ("embeddings", "EMBEDDING"), ("guardrail ", "GUARDRAIL"),
                ("user_outcome ", "EVALUATOR"))
    for prefix, kind in prefixes:
        if name.startswith(prefix):
            return kind
    if name in ("initialize", "tools/list", "mcp session setup"):
        return "SPAN"  # MCP protocol traffic: not a GenAI step
    return "CHAIN"  # graph nodes, the query engine, the synthesizer, the splitter


@pytest.fixture(scope="module")
def demo_spans(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("langfuse-demo")
    with otlp_receiver() as receiver:
        env = dict(os.environ, SPANGUARD_HOME=str(workdir / "home"),
                   SPANGUARD_PRESET="langfuse", LANGFUSE_HOST=receiver.endpoint,
                   LANGFUSE_PUBLIC_KEY="pk-lf-demo", LANGFUSE_SECRET_KEY="sk-lf-demo",
                   LANGFUSE_TRACING_ENVIRONMENT="demo",
                   OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        result = subprocess.run([sys.executable, str(repo_root() / "examples" / "demo.py")],
                                env=env, cwd=workdir, capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    assert set(receiver.requests) == {"/api/public/otel/v1/traces"}
    return receiver.spans


def _story(traces: Mapping[str, langfuse_rules.Trace]) -> langfuse_rules.Trace:
    """Run 1: the support agent's answer, with the commit through MCP."""
    (story,) = [t for t in traces.values() if t.name == "support_agent"
                and any(o.name == "git_commit" for o in t.observations)]
    return story


def _true_usage(spans: list[Mapping[str, Any]]) -> tuple[int, int, float]:
    """What the runs' models reported, by spanguard's own run accounting: each span tree
    root (the LangGraph run, the LlamaIndex query inside its tool) sums its calls."""
    roots = [s["attributes"] for s in spans if "spanguard.run.model_calls" in s["attributes"]]
    return (sum(a["spanguard.run.input_tokens"] for a in roots),
            sum(a["spanguard.run.output_tokens"] for a in roots),
            sum(a["spanguard.run.cost_usd"] for a in roots))


def test_trace_totals_equal_the_true_tokens_and_cost(demo_spans: list[dict[str, Any]]) -> None:
    traces = langfuse_rules.ingest(demo_spans)
    runs = [t for t in traces.values() if t.name == "support_agent"]
    assert len(runs) == 2
    for run in runs:
        spans = [s for s in demo_spans if s["trace_id"] == run.id]
        inputs, outputs, cost = _true_usage(spans)
        model_spans = [s["attributes"] for s in spans
                       if s["attributes"].get("openinference.span.kind") == "LLM"]
        # The two accountings agree: the per-call usage is the truth the roots add up.
        # (a model call the loop budget refused has a span and no usage: it never ran)
        assert inputs == sum(a.get("gen_ai.usage.input_tokens", 0) for a in model_spans) > 0
        assert outputs == sum(a.get("gen_ai.usage.output_tokens", 0) for a in model_spans)
        assert run.usage("input") == inputs and run.usage("output") == outputs
        assert run.total_tokens == inputs + outputs
        assert run.total_cost == pytest.approx(cost) and cost > 0
        # Only generations carry usage or cost: not the invoke_agent root (an aggregate),
        # not the LlamaIndex CHAIN root inside the tool, not the proxy's spans.
        assert {o.type for o in run.observations if o.usage or o.cost} == {"GENERATION"}
        for generation in (o for o in run.observations if o.type == "GENERATION"):
            assert generation.model == "gpt-4o-mini"
            if generation.usage:  # (the refused call has none, so nothing to price)
                assert generation.cost, f"{generation.name} would be priced by Langfuse"
    assert any(o.name == "RetrieverQueryEngine" for o in _story(traces).observations)


def test_every_observation_has_the_type_its_span_is(demo_spans: list[dict[str, Any]]) -> None:
    traces = langfuse_rules.ingest(demo_spans)
    observations = {o.id: o for t in traces.values() for o in t.observations}
    assert len(observations) == len(demo_spans)
    wrong = {(s["name"], observations[s["span_id"]].type, expected_type(s["name"]))
             for s in demo_spans if observations[s["span_id"]].type != expected_type(s["name"])}
    assert wrong == set()
    seen = {o.type for o in observations.values()}
    assert {"AGENT", "CHAIN", "GENERATION", "TOOL", "RETRIEVER", "EMBEDDING", "GUARDRAIL",
            "SPAN"} <= seen


def test_streamed_generations_have_their_time_to_first_token(
        demo_spans: list[dict[str, Any]]) -> None:
    traces = langfuse_rules.ingest(demo_spans)
    story = _story(traces)
    streamed = [o for o in story.observations if o.type == "GENERATION"
                and o.attributes.get("gen_ai.request.stream")]
    assert len(streamed) == 5  # the agent's five model calls stream; the passage writer not
    for generation in streamed:
        assert generation.completion_start_time is not None, generation.name
        first = langfuse_rules.iso_of(generation.start_ns).timestamp() + \
            generation.attributes["gen_ai.response.time_to_first_chunk"]
        completion = generation.completion_start_time.replace("Z", "+00:00")
        assert datetime.fromisoformat(completion).timestamp() == pytest.approx(first, abs=1e-5)
        assert generation.start_ns / 1e9 <= first <= generation.end_ns / 1e9


def test_trace_input_output_user_session_and_environment(
        demo_spans: list[dict[str, Any]]) -> None:
    traces = langfuse_rules.ingest(demo_spans)
    story = _story(traces)
    assert story.input == QUESTION
    assert isinstance(story.output, str) and "refundable in full within 30 days" in story.output
    assert story.user_id is not None and story.user_id.startswith("hmac:")
    assert story.session_id is not None and story.session_id.startswith("hmac:")
    assert "customer-829" not in story.user_id and "ticket-4711" not in story.session_id
    assert all(o.environment == "demo" for t in traces.values() for o in t.observations)
    assert story.environment == "demo"
    for generation in (o for o in story.observations if o.type == "GENERATION"):
        assert generation.input and generation.output, generation.name


def test_the_hold_and_the_verification_are_on_the_tool_observation(
        demo_spans: list[dict[str, Any]]) -> None:
    traces = langfuse_rules.ingest(demo_spans)
    (commit,) = [o for t in traces.values() for o in t.observations
                 if o.type == "TOOL" and o.attributes.get("mcp.method.name") == "tools/call"
                 and o.name == "git_commit"]
    assert commit.attributes["spanguard.hold.decision"] == "approved"
    assert commit.attributes["spanguard.hold.checker"] == "maria"
    assert commit.attributes["spanguard.verification.status"] == "verified"
    assert commit.status_message is not None
    assert "approved by maria" in commit.status_message
    assert "verification verified: git_log shows the change" in commit.status_message


def test_session_setup_is_one_trace_not_one_per_request(
        demo_spans: list[dict[str, Any]]) -> None:
    traces = langfuse_rules.ingest(demo_spans)
    setup = [t for t in traces.values() if t.name == "mcp session setup"]
    assert len(setup) == 1
    names = sorted(o.name for o in setup[0].observations)
    assert names == ["initialize", "mcp session setup"]
    assert not [t for t in traces.values() if t.name in ("initialize", "tools/list")]


def test_a_langfuse_older_than_the_agent_fix_gets_the_same_totals(
        demo_spans: list[dict[str, Any]]) -> None:
    """Langfuse before pull request #14808 (July 2026; self-hosted ones may be older) took
    usage from invoke_agent spans too. The preset leaves the agent's aggregate
    (gen_ai.usage.* on the invoke_agent root) out of what Langfuse gets, so such a
    Langfuse gets the same, true totals; no CHAIN root carries any usage either."""
    fixed = langfuse_rules.ingest(demo_spans)
    older = langfuse_rules.ingest(demo_spans, agent_fix=False)
    for trace_id, trace in fixed.items():
        assert older[trace_id].total_tokens == trace.total_tokens
        assert older[trace_id].total_cost == pytest.approx(trace.total_cost)
    roots = [s for s in demo_spans if "spanguard.run.model_calls" in s["attributes"]]
    assert len(roots) >= 3  # two LangGraph runs, the LlamaIndex query inside a tool
    for root in roots:
        assert not langfuse_rules.usage_details(root["attributes"])
        assert not langfuse_rules.cost_details(root["attributes"])
