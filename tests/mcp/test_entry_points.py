"""Both MCP entry points take the same three arguments: policy, tracer and meter providers.

``policy=`` is a ``Policy``, a path to a TOML file, or None (then
``SPANGUARD_POLICY``). ``McpProxy`` runs embedded here, on a socket pair, in
front of the real recorder server; ``instrument_server`` on a real SDK server.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from spanguard import semconv as sc
from spanguard.guardrails.policy import Policy
from spanguard.mcp_bridge import McpProxy, ToolAnnotations, instrument_server
from spanguard.testing import SpanCapture
from tests.mcp.mcp_helpers import connect, high_level_server
from tests.mcp.proxyproc import RECORDER

POLICY = "[loop_budget]\nmax_tool_calls = 1\n"
FORMS = ["Policy", "path", "SPANGUARD_POLICY"]


def policy_argument(form: str, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Policy | str | os.PathLike[str] | None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    if form == "Policy":
        return Policy.from_file(path)
    if form == "path":
        return path
    monkeypatch.setenv("SPANGUARD_POLICY", str(path))
    return None


def decisions(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    counted: dict[tuple[str, str], int] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != sc.METRIC_GUARDRAIL_DECISIONS:
                    continue
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    attributes = point.attributes or {}
                    key = (str(attributes[sc.GUARDRAIL_NAME]),
                           str(attributes[sc.GUARDRAIL_DECISION]))
                    counted[key] = counted.get(key, 0) + int(point.value)  # type: ignore[union-attr]
    return counted


async def exchange(proxy: McpProxy, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the proxy on a socket pair, send each request, collect each response, hang up."""
    proxy_end, client_end = socket.socketpair()
    proxy_reader, proxy_writer = await asyncio.open_connection(sock=proxy_end)
    reader, writer = await asyncio.open_connection(sock=client_end)
    running = asyncio.create_task(proxy.run(proxy_reader, proxy_writer))
    responses = []
    for request in requests:
        writer.write(json.dumps({"jsonrpc": "2.0", **request}).encode() + b"\n")
        await writer.drain()
        if "id" in request:
            responses.append(json.loads(await asyncio.wait_for(reader.readline(), 20)))
    writer.close()
    assert await asyncio.wait_for(running, 20) == 0
    return responses


def call(request_id: int, tool: str) -> dict[str, Any]:
    return {"id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": {"n": request_id}}}


@pytest.mark.parametrize("form", FORMS)
async def test_mcp_proxy_takes_policy_tracer_provider_and_meter_provider(
        form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: SpanCapture) -> None:
    metrics = InMemoryMetricReader()
    proxy = McpProxy([*RECORDER, str(tmp_path / "log")], tracer_provider=cap.tracer_provider,
                     meter_provider=MeterProvider(metric_readers=[metrics]),
                     policy=policy_argument(form, tmp_path, monkeypatch), identity="alice")
    init = {"id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}}
    _, first, second = await exchange(proxy, [
        init, {"method": "notifications/initialized"}, call(1, "echo"), call(2, "wipe")])

    assert first["result"]["isError"] is False
    refusal = second["result"]["structuredContent"]["spanguard"]
    assert refusal["error_type"] == "loop_budget_exceeded"
    assert {"tools/call echo", "tools/call wipe"} <= set(cap.names())
    assert decisions(metrics)[("loop_budget", "deny")] == 1
    assert isinstance(proxy.annotations, ToolAnnotations)  # the gate's one cache
    assert proxy.annotations.get("wipe") == {"destructiveHint": True, "readOnlyHint": False}


@pytest.mark.parametrize("form", FORMS)
async def test_instrument_server_takes_policy_tracer_provider_and_meter_provider(
        form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: SpanCapture) -> None:
    metrics = InMemoryMetricReader()
    executed: list[str] = []
    server = high_level_server(executed)
    middleware = instrument_server(
        server, policy=policy_argument(form, tmp_path, monkeypatch),
        tracer_provider=cap.tracer_provider,
        meter_provider=MeterProvider(metric_readers=[metrics]))

    async with connect(server) as session:
        first = await session.call_tool("echo", {"text": "a"})
        second = await session.call_tool("delete_all", {"text": "b"})

    assert not first.is_error and executed == ["echo"]
    assert (second.structured_content or {})["spanguard"]["error_type"] == \
        "loop_budget_exceeded"
    assert {"tools/call echo", "tools/call delete_all"} <= set(cap.names())
    assert decisions(metrics)[("loop_budget", "deny")] == 1
    assert middleware.tools is middleware.gate.tools
    assert middleware.tools.get("delete_all") == {"destructiveHint": True}


async def test_without_a_policy_nothing_is_guarded(cap: SpanCapture) -> None:
    executed: list[str] = []
    server = high_level_server(executed)
    middleware = instrument_server(server, tracer_provider=cap.tracer_provider)
    async with connect(server) as session:
        for _ in range(3):
            assert not (await session.call_tool("delete_all", {"text": "x"})).is_error
    assert executed == ["delete_all"] * 3
    assert not middleware.gate.active
