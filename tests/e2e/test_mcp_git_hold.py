"""Issue 7's end-to-end story through ``spanguard mcp wrap`` around the real mcp-server-git.

An agent (the SDK ``ClientSession``, as alice) stages a change and asks to commit
it; the proxy holds ``git_commit``; alice cannot approve her own call; the
reviewer, whose key (``spanguard reviewer init``) the policy lists, approves it
through the CLI with a signature; the identical call made again commits exactly
once; the proxy reads the commit back through ``git_log`` and marks it verified.
The caller's span, the proxy's spans and the audit log tell the same story, in
one trace, and ``spanguard audit verify --policy`` proves it against the keys.
Nothing here sleeps on a timestamp: checks are on states and shapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from spanguard.store import StoredSpan
from spanguard.testing import SpanCapture
from tests.mcp.proxyproc import stored_spans
from tests.mcp.sdk_otel import global_capture

MESSAGE = "Add the greeting"
POLICY = """
[holds]
high_risk = true          # git_commit: neither readOnlyHint nor idempotentHint

[verify]
hold_on_failure = true

[verify.git_commit]
call = "git_log"
arguments = { repo_path = "{repo_path}" }
expect_contains = "{message}"
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Alice Agent")
    git(path, "config", "user.email", "alice@example.com")
    (path / "README.md").write_text("hello\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "first commit")
    (path / "greeting.txt").write_text("hello, world\n")
    return path


def spanguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spanguard", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=60)


def commits(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s").splitlines()


def reviewer_key(name: str) -> str:
    """``spanguard reviewer init --as NAME``: the public key it prints."""
    created = spanguard("reviewer", "init", "--as", name)
    assert created.returncode == 0, created.stderr
    return next(line.split(": ", 1)[1] for line in created.stdout.splitlines()
                if line.startswith("public key: "))


async def test_held_git_commit_is_approved_by_a_second_identity_and_verified(
        repo: Path, tmp_path: Path, spanguard_home: Path, cap: SpanCapture) -> None:
    policy = tmp_path / "policy.toml"
    public = reviewer_key("reviewer")
    policy.write_text(POLICY + f'\n[holds.reviewers.reviewer]\nkey = "{public}"\n')
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "spanguard", "mcp", "wrap", "--policy", str(policy), "--identity", "alice",
              "--", sys.executable, "-m", "mcp_server_git", "--repository", str(repo)],
        env=dict(os.environ))
    # The SDK's client spans go to the global provider; with one installed (as in an
    # application that traces) they sit between the caller and the proxy.
    sdk_spans = global_capture()
    tracer = cap.tracer_provider.get_tracer("agent")
    commit_args = {"repo_path": str(repo), "message": MESSAGE}
    results: dict[str, Any] = {}
    with tracer.start_as_current_span("invoke_agent git-agent") as caller:
        async with stdio_client(server) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            await client.list_tools()
            staged = await client.call_tool(
                "git_add", {"repo_path": str(repo), "files": ["greeting.txt"]})
            assert not staged.is_error, staged
            held = await client.call_tool("git_commit", commit_args)
            results["held"] = held
            assert commits(repo) == ["first commit"]  # the held call did not run

            hold = (held.structured_content or {})["spanguard_hold"]
            hold_id = hold["hold_id"]
            own = spanguard("holds", "approve", hold_id, "--as", "alice",
                            "--policy", str(policy))
            results["self_approval"] = own
            unsigned = spanguard("holds", "approve", hold_id, "--as", "carol",
                                 "--policy", str(policy))
            results["unsigned"] = unsigned
            approved = spanguard("holds", "approve", hold_id, "--as", "reviewer",
                                 "--policy", str(policy), "--reason", "looks right")
            assert approved.returncode == 0, approved.stderr
            assert f"signed with {public}" in approved.stdout

            results["committed"] = await client.call_tool("git_commit", commit_args)
            results["again"] = await client.call_tool("git_commit", commit_args)

    # 1. What the client saw.
    held = results["held"]
    assert held.is_error
    assert hold["status"] == "held" and hold["tool"] == "git_commit"
    assert hold["executed"] is False
    assert hold["approve_command"] == f"spanguard holds approve {hold_id} --as NAME"
    assert hold_id in held.content[0].text and "spanguard holds approve" in held.content[0].text
    assert results["self_approval"].returncode == 1
    refusal = results["self_approval"]
    assert "cannot also decide it" in refusal.stdout + refusal.stderr
    assert results["unsigned"].returncode == 1
    assert "must be signed with a reviewer key" in results["unsigned"].stdout
    committed = results["committed"]
    assert not committed.is_error, committed
    assert committed.content[0].text.startswith("Changes committed successfully")
    assert committed.meta is not None
    assert committed.meta["spanguard/guardrail"]["verification"]["status"] == "verified"
    # The approval ran one call: the same payload once more is a new hold, not a commit.
    again = results["again"]
    assert again.is_error
    assert (again.structured_content or {})["spanguard_hold"]["hold_id"] != hold_id

    # 2. The world: exactly one new commit, with the message, on top.
    assert commits(repo) == [MESSAGE, "first commit"]
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["greeting.txt"]

    # 3. One trace: the caller's span is the root of every proxy span of the story.
    trace_id = format(caller.get_span_context().trace_id, "032x")
    spans = stored_spans(spanguard_home)
    story = [s for s in spans if s.name.startswith(("tools/call", "guardrail"))]
    assert story and {s.trace_id for s in story} == {trace_id}
    by_id = {s.span_id: s for s in spans}
    caller_id = format(caller.get_span_context().span_id, "016x")
    client_spans = {format(c.context.span_id, "016x"): c
                    for c in sdk_spans.exporter.get_finished_spans()
                    if c.name.startswith("MCP send")}
    for span in story:
        entry = _root_parent(span, by_id)
        client = client_spans.get(entry or "")
        if client is not None:  # through the SDK's client span, itself under the caller
            assert client.parent is not None
            entry = format(client.parent.span_id, "016x")
        assert entry == caller_id, span.name
    calls = [s for s in spans if s.name == "tools/call git_commit" and s.kind == "SERVER"]
    calls.sort(key=lambda s: s.start_time)
    assert [(s.attributes.get("spanguard.hold.status"), s.attributes.get(
        "spanguard.verification.status"), s.status) for s in calls] == [
        ("held", None, "ERROR"), ("executed", "verified", "UNSET"), ("held", None, "ERROR")]
    assert calls[0].attributes["spanguard.hold.id"] == hold_id
    # The call that ran carries the approval it ran under, and who gave it.
    assert calls[1].attributes["spanguard.hold.id"] == hold_id
    assert calls[1].attributes["spanguard.hold.decision"] == "approved"
    assert calls[1].attributes["spanguard.hold.checker"] == "reviewer"
    # The same commit again needs an approval of its own: a new hold, created.
    assert [c.attributes["spanguard.hold.decision"] for c in (calls[0], calls[2])] == [
        "created", "created"]
    assert calls[2].attributes["spanguard.hold.id"] != hold_id
    assert calls[0].attributes["error.type"] == "held_for_approval"
    read_back = [s for s in spans if s.name == "tools/call git_log" and s.kind == "CLIENT"]
    assert len(read_back) == 1 and read_back[0].parent_span_id == calls[1].span_id
    decisions = [(s.name, s.attributes.get("spanguard.guardrail.decision"))
                 for s in spans if s.parent_span_id == calls[0].span_id]
    assert decisions == [("guardrail holds", "hold")]
    assert [e["name"] for e in calls[1].events] == ["guardrail holds", "guardrail verify"]

    # 4. The audit log: the same story, chained and intact.
    listed = spanguard("audit", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    story_events = [(r["event"], r["actor"], r["subject"]) for r in records]
    assert story_events[:4] == [
        ("hold.created", "alice", hold_id),
        ("hold.approved", "reviewer", hold_id),
        ("hold.executed", "alice", hold_id),
        ("verification.verified", "alice", "git_commit"),
    ]
    assert story_events[4][0] == "hold.created"
    approval = records[1]
    assert approval["detail"]["signed_by"] == public and approval["signer"] == public
    anchor = spanguard("audit", "anchor")
    assert anchor.returncode == 0, anchor.stderr
    verify = spanguard("audit", "verify", "--policy", str(policy), "--expect-head",
                       anchor.stdout.strip())
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout


def _root_parent(span: StoredSpan, by_id: dict[str, StoredSpan]) -> str | None:
    """The first ancestor that is not a proxy span: where the caller's trace came in."""
    parent = span.parent_span_id
    while parent in by_id:
        parent = by_id[parent].parent_span_id
    return parent
