"""One call, two MCP paths, one answer: ``instrument_server`` and ``spanguard mcp wrap``.

The same server code (``servers/parity_server.py``) runs in process behind
``instrument_server`` and as a subprocess behind the real ``spanguard mcp wrap``,
each reached by the SDK's own ``ClientSession``, with the same policy file, the
same maker identity, the same server name (``--name parity``, the in-process
server's own name, so both paths are one server to the hold store) and the same
``SPANGUARD_HOME``. Each case makes the same
calls both ways and requires the last answer to be the same wire JSON (text,
``structuredContent``, ``_meta["spanguard/guardrail"]``, ``isError``) and the
call's SERVER span to carry the same ``error.type``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult
from opentelemetry.trace import SpanKind

import tests.mcp.servers.guarded_wrap  # noqa: F401  (registers [test_tools] here too)
from spanguard import semconv as sc
from spanguard.mcp_bridge import GUARDRAIL_META_KEY, instrument_server
from tests.mcp.mcp_helpers import connect
from tests.mcp.proxyproc import GUARDED, SERVERS, SPANGUARD, stored_spans
from tests.mcp.sdk_otel import finished, global_capture
from tests.mcp.servers.parity_server import build

PARITY_SERVER = [sys.executable, str(SERVERS / "parity_server.py")]

Call = tuple[str, dict[str, Any], dict[str, Any] | None]


def usage(tokens_in: int) -> dict[str, Any]:
    return {"spanguard/usage": {"input_tokens": tokens_in, "output_tokens": 10,
                                "model": "gpt-test"}}


@dataclass(frozen=True)
class Case:
    policy: str
    calls: list[Call]
    error_type: str
    runner: list[str] = field(default_factory=lambda: SPANGUARD)


CASES = {
    "held": Case('[holds]\ntools = ["delete_all"]\n',
                 [("delete_all", {"text": "users"}, None)], "held_for_approval"),
    "budget_refusal": Case("[loop_budget]\nmax_input_tokens = 1000\n",
                           [("echo", {"text": "a"}, usage(600)),
                            ("echo", {"text": "b"}, usage(600))], "loop_budget_exceeded"),
    "invalid_usage": Case("[loop_budget]\nmax_input_tokens = 1000\n",
                          [("echo", {"text": "a"},
                            {"spanguard/usage": {"input_tokens": "lots"}})], "invalid_usage"),
    "negative_usage": Case("[loop_budget]\nmax_input_tokens = 1000\n",
                           [("echo", {"text": "a"},
                             {"spanguard/usage": {"input_tokens": -1, "output_tokens": 0}})],
                           "invalid_usage"),
    "crashed_guard": Case('[test_tools]\ncrash_before = ["echo"]\n',
                          [("echo", {"text": "a"}, None)], "guardrail_error", GUARDED),
    "crashed_post_call_guard": Case('[test_tools]\ncrash_after = ["echo"]\n',
                                    [("echo", {"text": "a"}, None)], "guardrail_error",
                                    GUARDED),
    "failed_read_back": Case(
        '[verify.lost_write]\ncall = "read"\narguments = { key = "{key}" }\n'
        'expect_contains = "{value}"\n',
        [("lost_write", {"key": "k", "value": "v"}, None)], "unverified_action"),
    "arguments_off_schema": Case("[tool_arguments]\n",
                                 [("transfer", {"amount": "ten", "to": "bob"}, None)],
                                 "tool_argument_error"),
    "another_tenants_result": Case("[tenant_scope]\n", [("lookup", {"key": "k"}, None)],
                                   "tenant_scope_violation"),
    "read_back_of_a_missing_tool": Case(
        '[verify.note]\ncall = "no_such_tool"\n',
        [("note", {"key": "k", "value": "v"}, None)], "unverified_action"),
}


@dataclass
class Answer:
    result: dict[str, Any]
    error_type: object


@asynccontextmanager
async def wrapped(policy: Path, runner: list[str],
                  name: str = "parity") -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=runner[0],
        args=[*runner[1:], "mcp", "wrap", "--policy", str(policy), "--identity", "alice",
              "--name", name, "--", *PARITY_SERVER],
        env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        yield client


def wire(result: CallToolResult) -> dict[str, Any]:
    dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dumped


async def in_process(policy: Path, calls: list[Call]) -> tuple[Answer, list[str]]:
    cap = global_capture()
    executed: list[str] = []
    server = build(executed)
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider,
                      identity="alice")
    async with connect(server) as session:
        results = [await session.call_tool(name, args, meta=meta) for name, args, meta in calls]
    name = calls[-1][0]
    span = [s for s in finished(cap, f"tools/call {name}") if s.kind is SpanKind.SERVER][-1]
    return Answer(wire(results[-1]), (span.attributes or {}).get(sc.ERROR_TYPE)), executed


async def through_proxy(policy: Path, calls: list[Call], runner: list[str],
                        home: Path, name: str = "parity") -> Answer:
    async with wrapped(policy, runner, name) as client:
        results = [await client.call_tool(name, args, meta=meta) for name, args, meta in calls]
    name = calls[-1][0]
    span = max((s for s in stored_spans(home)
                if s.name == f"tools/call {name}" and s.kind == "SERVER"),
               key=lambda s: s.start_time)
    return Answer(wire(results[-1]), span.attributes.get(sc.ERROR_TYPE))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_the_same_call_gets_the_same_answer_and_error_type_on_both_paths(
        case: Case, tmp_path: Path, spanguard_home: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(case.policy)

    local, _ = await in_process(policy, case.calls)
    proxied = await through_proxy(policy, case.calls, case.runner, spanguard_home)

    assert local.result["isError"] is True
    assert proxied.result == local.result  # text, structuredContent, _meta: byte for byte
    assert local.error_type == proxied.error_type == case.error_type


async def test_a_held_call_is_one_hold_with_one_text_on_both_paths(
        tmp_path: Path, spanguard_home: Path) -> None:
    case = CASES["held"]
    policy = tmp_path / "policy.toml"
    policy.write_text(case.policy)

    local, executed = await in_process(policy, case.calls)
    proxied = await through_proxy(policy, case.calls, case.runner, spanguard_home)

    assert executed == []
    hold = local.result["structuredContent"]["spanguard_hold"]
    assert hold["status"] == "held" and hold["tool"] == "delete_all"
    # Same maker, same payload: the proxy's call found the hold the first call made.
    assert proxied.result["structuredContent"]["spanguard_hold"]["hold_id"] == hold["hold_id"]
    assert proxied.result["content"][0]["text"] == local.result["content"][0]["text"]
    assert f"spanguard holds approve {hold['hold_id']} --as NAME" in \
        local.result["content"][0]["text"]


async def test_read_only_tools_run_and_a_held_call_says_which_rule_on_both_paths(
        tmp_path: Path, spanguard_home: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[holds]\nhigh_risk = true\nread_only = ["lost_*"]\n')
    calls: list[Call] = [("lost_write", {"key": "k", "value": "v"}, None),
                         ("note", {"key": "k", "value": "v"}, None)]

    local, executed = await in_process(policy, calls)
    proxied = await through_proxy(policy, calls, SPANGUARD, spanguard_home)

    assert executed == ["lost_write"]  # declared read-only: runs; note: no hints, held
    hold = local.result["structuredContent"]["spanguard_hold"]
    assert hold["rule"] == "high_risk" and hold["action_class"] == "non_idempotent_mutation"
    assert "neither readOnlyHint nor idempotentHint" in hold["reason"]
    assert "[holds] read_only" in hold["reason"]
    other = proxied.result["structuredContent"]["spanguard_hold"]
    assert (other["rule"], other["reason"]) == (hold["rule"], hold["reason"])
    assert hold["reason"] in proxied.result["content"][0]["text"]


async def test_a_failed_read_back_keeps_the_tools_content_and_says_why_on_both_paths(
        tmp_path: Path, spanguard_home: Path) -> None:
    case = CASES["failed_read_back"]
    policy = tmp_path / "policy.toml"
    policy.write_text(case.policy)

    local, executed = await in_process(policy, case.calls)
    proxied = await through_proxy(policy, case.calls, case.runner, spanguard_home)

    assert executed == ["lost_write", "read"]  # the read-back went to the server's own tool
    texts = [block["text"] for block in local.result["content"]]
    assert texts == ["stored k", "spanguard: not confirmed (verify: read does not show the "
                                 "change)"]
    assert local.result["_meta"][GUARDRAIL_META_KEY] == {
        "verification": {"status": "failed", "detail": "read does not show the change"}}
    assert proxied.result == local.result


async def test_arguments_off_the_declared_schema_never_reach_the_tool_on_both_paths(
        tmp_path: Path, spanguard_home: Path) -> None:
    case = CASES["arguments_off_schema"]
    policy = tmp_path / "policy.toml"
    policy.write_text(case.policy)

    local, executed = await in_process(policy, case.calls)
    proxied = await through_proxy(policy, case.calls, case.runner, spanguard_home)

    assert executed == []
    refusal = local.result["structuredContent"]["spanguard"]
    assert refusal["error_type"] == "tool_argument_error"
    assert "$.amount: type 'number'" in refusal["reason"]
    assert "ten" not in local.result["content"][0]["text"]  # names the rule, not the value
    assert proxied.result == local.result


async def test_another_tenants_result_is_withheld_whole_on_both_paths(
        tmp_path: Path, spanguard_home: Path) -> None:
    case = CASES["another_tenants_result"]
    policy = tmp_path / "policy.toml"
    policy.write_text(case.policy)

    local, executed = await in_process(policy, case.calls)
    proxied = await through_proxy(policy, case.calls, case.runner, spanguard_home)

    assert executed == ["lookup"]
    text = repr(local.result)
    assert "1200 EUR" not in text and "globex" not in text  # nothing of it passes
    assert local.result["structuredContent"]["spanguard"]["error_type"] == \
        "tenant_scope_violation"
    assert proxied.result == local.result


async def test_the_same_call_to_a_server_of_another_name_is_another_hold(
        tmp_path: Path, spanguard_home: Path) -> None:
    case = CASES["held"]
    policy = tmp_path / "policy.toml"
    policy.write_text(case.policy)

    local, _ = await in_process(policy, case.calls)
    staging = await through_proxy(policy, case.calls, case.runner, spanguard_home,
                                  name="staging")

    here = local.result["structuredContent"]["spanguard_hold"]
    there = staging.result["structuredContent"]["spanguard_hold"]
    assert (here["server"], there["server"]) == ("parity", "staging")
    assert there["hold_id"] != here["hold_id"]
    assert there["payload_hash"] != here["payload_hash"]
