"""What the gate brings to ``instrument_server``: usage charging, read-back, hold waits.

These used to exist only in the stdio proxy; in process they go through the
same :class:`~spanguard.mcp_bridge.ToolGate`. Real SDK servers (``MCPServer``
and the low-level ``Server``), a real ``ClientSession``, the real hold store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from opentelemetry.trace import SpanKind

from spanguard import semconv as sc
from spanguard.guardrails.approvals import approve, list_holds
from spanguard.guardrails.holds import HoldRules
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.stores import StoreConfig
from spanguard.hashing import payload_hash
from spanguard.mcp_bridge import GUARDRAIL_META_KEY, USAGE_META_KEY, instrument_server
from tests.mcp.mcp_helpers import connect, high_level_server, low_level_server
from tests.mcp.sdk_otel import finished, global_capture

ServerFactory = Callable[..., "Server[Any] | MCPServer"]
SERVERS = pytest.mark.parametrize("make_server", [high_level_server, low_level_server],
                                  ids=["MCPServer", "lowlevel"])


def usage(tokens_in: int, tokens_out: int = 20) -> dict[str, Any]:
    return {USAGE_META_KEY: {"input_tokens": tokens_in, "output_tokens": tokens_out,
                             "model": "gpt-test"}}


@SERVERS
async def test_token_usage_in_meta_is_charged_to_the_session_budget_in_process(
        make_server: ServerFactory) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = make_server(executed)
    policy = Policy.from_mapping({"loop_budget": {"max_input_tokens": 1000}})
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        for text in ("a", "b"):
            assert not (await session.call_tool("echo", {"text": text},
                                                 meta=usage(400))).is_error
        # A call that reports nothing is not charged tokens.
        assert not (await session.call_tool("echo", {"text": "c"})).is_error
        over = await session.call_tool("echo", {"text": "d"}, meta=usage(400))

    assert executed == ["echo", "echo", "echo"]
    assert over.is_error and over.structured_content is not None
    refusal = over.structured_content["spanguard"]
    assert refusal["error_type"] == "loop_budget_exceeded"
    assert "input_tokens" in refusal["reason"] and "1,000" in refusal["reason"]
    denied = next(node for tree in cap.trees() for node in tree.walk()
                  if node.name == "guardrail loop_budget"
                  and node.attributes.get(sc.GUARDRAIL_DECISION) == "deny")
    assert denied.attributes["spanguard.guardrail.spend"] == 800
    assert denied.attributes["spanguard.guardrail.limit"] == 1000


@SERVERS
async def test_a_read_back_verifies_through_the_servers_own_tool_in_process(
        make_server: ServerFactory) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = make_server(executed)
    policy = Policy.from_mapping({"verify": {"delete_all": {
        "call": "echo", "arguments": {"text": "{text}"}, "expect_contains": "{text}"}}})
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        result = await session.call_tool("delete_all", {"text": "users"})
        plain = await session.call_tool("echo", {"text": "no verifier"})

    assert executed == ["delete_all", "echo", "echo"]  # the read-back ran on the server
    assert not result.is_error
    assert result.meta is not None
    assert result.meta[GUARDRAIL_META_KEY]["verification"]["status"] == "verified"
    assert plain.meta is None or GUARDRAIL_META_KEY not in plain.meta  # never "verified"
    (call,) = [s for s in finished(cap, "tools/call delete_all") if s.kind is SpanKind.SERVER]
    assert (call.attributes or {})[sc.VERIFICATION_STATUS] == "verified"
    (read_back,) = [s for s in finished(cap, "tools/call echo") if s.kind is SpanKind.CLIENT]
    assert read_back.parent is not None and read_back.parent.span_id == call.context.span_id
    assert (read_back.attributes or {})[sc.TOOL_ARGS_HASH] == payload_hash({"text": "users"})


async def test_a_held_call_waits_for_the_checker_in_process_without_blocking_the_session(
        ) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    instrument_server(server, policy=Policy(holds=HoldRules(tools=("delete_all",))),
                      tracer_provider=cap.tracer_provider, identity="alice", hold_wait=30)

    async with connect(server) as session:
        waiting = asyncio.create_task(session.call_tool("delete_all", {"text": "users"}))
        while not list_holds("pending"):
            await asyncio.sleep(0.02)
        assert not (await session.call_tool("echo", {"text": "meanwhile"})).is_error
        assert executed == ["echo"]
        (pending,) = list_holds("pending")
        approve(pending.id, "bob")
        result = await asyncio.wait_for(waiting, 20)

    assert not result.is_error
    assert executed == ["echo", "delete_all"]


async def test_a_hold_wait_polls_the_store_the_policy_names(tmp_path: Path) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    url = f"sqlite://{tmp_path / 'policy-store.db'}"
    policy = Policy(holds=HoldRules(tools=("delete_all",)), store=StoreConfig(url))
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider,
                      identity="alice", hold_wait=30)

    async with connect(server) as session:
        waiting = asyncio.create_task(session.call_tool("delete_all", {"text": "users"}))
        while not list_holds("pending", store_url=url):
            await asyncio.sleep(0.02)
        assert list_holds("pending") == []  # not in the default store
        (pending,) = list_holds("pending", store_url=url)
        approve(pending.id, "bob", store_url=url)
        result = await asyncio.wait_for(waiting, 20)

    assert not result.is_error
    assert executed == ["delete_all"]


async def test_a_hold_wait_that_times_out_answers_held() -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    instrument_server(server, policy=Policy(holds=HoldRules(tools=("delete_all",))),
                      tracer_provider=cap.tracer_provider, identity="alice", hold_wait=0.2)

    async with connect(server) as session:
        result = await session.call_tool("delete_all", {"text": "users"})

    assert result.is_error and executed == []
    assert (result.structured_content or {})["spanguard_hold"]["status"] == "held"
    (span,) = finished(cap, "tools/call delete_all")
    assert (span.attributes or {})[sc.ERROR_TYPE] == "held_for_approval"


async def test_concurrent_calls_on_one_session_never_exceed_the_tool_call_budget() -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    policy = Policy.from_mapping({"loop_budget": {"max_tool_calls": 5}})
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        results = await asyncio.gather(*(session.call_tool("echo", {"text": str(n)})
                                         for n in range(20)))

    assert len(executed) == 5
    refused = [r for r in results if r.is_error]
    assert len(refused) == 15
    assert {(r.structured_content or {})["spanguard"]["error_type"] for r in refused} == \
        {"loop_budget_exceeded"}


JUNK_USAGE: dict[str, tuple[object, str]] = {
    # name: (the caller's "spanguard/usage" value, what the refusal must say)
    "negative": ({"input_tokens": -5000, "output_tokens": -1}, "input_tokens must be a whole"),
    "text": ({"input_tokens": "lots", "cost_usd": "free"}, "got 'lots'"),
    "booleans": ({"input_tokens": True, "output_tokens": False, "cost_usd": True}, "got True"),
    "fractions": ({"input_tokens": 12.5}, "got 12.5"),
    "floats": ({"input_tokens": 1e308, "cost_usd": float("inf")}, "got 1e+308"),
    "nulls": ({"input_tokens": None, "model": 42}, "got None"),
    "model_not_text": ({"input_tokens": 10, "model": 42}, "model must be a string"),
    "negative_cost": ({"input_tokens": 10, "cost_usd": -0.5}, "cost_usd must be a number"),
    "not_a_table": ("900 tokens", "got str"),
    "a_list": ([900, 20], "got list"),
    "huge": ({"input_tokens": 2**70}, "got 1180591620717411303424"),
    "no_counts": ({"model": "gpt-test"}, "no input_tokens or output_tokens"),
    "typo": ({"input_token": 900}, "unknown key(s) 'input_token'"),
}


@pytest.mark.parametrize("junk", JUNK_USAGE.values(), ids=JUNK_USAGE.keys())
async def test_junk_usage_in_meta_is_refused_with_a_clear_error_not_charged_as_zero(
        junk: tuple[object, str]) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    policy = Policy.from_mapping({"loop_budget": {"max_input_tokens": 1000}})
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider)
    value, reason = junk

    async with connect(server) as session:
        result = await session.call_tool("echo", {"text": "x"},
                                         meta={USAGE_META_KEY: value})
        # The refusal charged nothing: a whole budget's worth still fits afterwards.
        after = await session.call_tool("echo", {"text": "y"}, meta=usage(1000, 0))

    refusal = (result.structured_content or {})["spanguard"]
    assert refusal["error_type"] == "invalid_usage"
    assert 'invalid _meta["spanguard/usage"]' in refusal["reason"]
    assert reason in refusal["reason"]
    assert "nothing was charged" in refusal["reason"]
    assert not after.is_error and executed == ["echo"]
    spans = finished(cap, "tools/call echo")
    assert (spans[0].attributes or {})[sc.ERROR_TYPE] == "invalid_usage"


VALID_USAGE = {
    "whole_floats": {"input_tokens": 600.0, "output_tokens": 0},
    "langchain_usage_metadata": {"input_tokens": 600, "output_tokens": 5, "total_tokens": 605,
                                 "input_token_details": {"cache_read": 0}},
    "input_only": {"input_tokens": 600},
}


@pytest.mark.parametrize("report", VALID_USAGE.values(), ids=VALID_USAGE.keys())
async def test_valid_usage_reports_are_charged(report: dict[str, Any]) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    policy = Policy.from_mapping({"loop_budget": {"max_input_tokens": 1000}})
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        first = await session.call_tool("echo", {"text": "a"}, meta={USAGE_META_KEY: report})
        second = await session.call_tool("echo", {"text": "b"}, meta={USAGE_META_KEY: report})

    assert not first.is_error
    assert (second.structured_content or {})["spanguard"]["error_type"] == \
        "loop_budget_exceeded"  # 600 were charged: another 600 do not fit 1,000
    assert executed == ["echo"]


async def test_a_batch_of_identical_calls_on_one_session_is_caught_by_the_loop_detector(
        ) -> None:
    cap = global_capture()
    executed: list[str] = []
    server = high_level_server(executed)
    policy = Policy.from_mapping({"tool_loop": {"identical_calls": 3}})
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider)

    async with connect(server) as session:
        results = await asyncio.gather(*(session.call_tool("echo", {"text": "same"})
                                         for _ in range(10)))

    assert len(executed) == 2
    assert {(r.structured_content or {})["spanguard"]["error_type"]
            for r in results if r.is_error} == {"tool_loop_detected"}
