"""The demo's traces, exported over OTLP to a real Phoenix and read back through its API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spanguard.store import TraceStore
from tests.conftest import repo_root
from tests.integration.phoenix_server import phoenix_spans, running_phoenix


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
    assert proxied["attributes"]["verification.status"] == "verified"
    agents = [span for span in remote if span["parent_id"] is None
              and span["span_kind"] == "AGENT"]
    assert len(agents) == 2
    for agent in agents:
        trace_id = agent["context"]["trace_id"]
        llm_tokens = sum(span["attributes"].get("llm.token_count.prompt", 0) for span in remote
                         if span["span_kind"] == "LLM" and span["context"]["trace_id"] == trace_id)
        assert llm_tokens == agent["attributes"]["llm.token_count.prompt"] > 0
        assert agent["attributes"]["llm.cost.total"] > 0
