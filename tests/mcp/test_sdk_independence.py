"""The MCP bridge with the installed SDK (2.x here; 1.x in tests/compat): the proxy
imports no SDK, the protocol constants are the SDK's, and client propagation adds the
run's correlation ids to what the 2.x SDK injects."""

from __future__ import annotations

import json
import subprocess
import sys

import mcp_types

import spanguard
from spanguard.hashing import KeyedHasher
from spanguard.mcp_bridge import _protocol as protocol
from spanguard.mcp_bridge import (
    correlation,
    correlation_from_meta,
    instrument_server,
    outgoing_meta,
    propagate_context,
)
from spanguard.mcp_bridge.client import propagate_requests
from spanguard.mcp_bridge.server import SpanguardServerMiddleware
from tests.mcp.mcp_helpers import connect, high_level_server
from tests.mcp.sdk_otel import global_capture
from tests.mcp.test_mcp_client_trace import MetaRecorder

HASHER = KeyedHasher(b"independence-test-key")


def test_the_proxy_and_its_cli_import_no_mcp_sdk_and_no_pydantic() -> None:
    code = ("import sys, spanguard.mcp_bridge.cli, spanguard.mcp_bridge.proxy, "
            "spanguard.mcp_bridge; print(sorted(m for m in ('mcp', 'mcp_types', 'pydantic') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_protocol_constants_match_the_installed_sdk() -> None:
    assert (protocol.PARSE_ERROR, protocol.INVALID_REQUEST, protocol.INTERNAL_ERROR,
            protocol.CONNECTION_CLOSED, protocol.PROTOCOL_VERSION_META_KEY) == (
        mcp_types.PARSE_ERROR, mcp_types.INVALID_REQUEST, mcp_types.INTERNAL_ERROR,
        mcp_types.CONNECTION_CLOSED, mcp_types.PROTOCOL_VERSION_META_KEY)
    assert (protocol.METHOD_NOT_FOUND, protocol.INVALID_PARAMS, protocol.REQUEST_TIMEOUT) == (
        mcp_types.METHOD_NOT_FOUND, mcp_types.INVALID_PARAMS, mcp_types.REQUEST_TIMEOUT)


def test_instrument_server_picks_the_2x_middleware() -> None:
    server = high_level_server()
    installed = instrument_server(server)
    assert isinstance(installed, SpanguardServerMiddleware)
    assert installed in server.middleware


async def test_propagate_requests_adds_the_run_context_ids_to_the_sdks_injection() -> None:
    global_capture()
    hasher = spanguard.configure(hash_key="k" * 16).hasher
    server = high_level_server()
    recorder = MetaRecorder()
    server.middleware.append(recorder)
    async with connect(server) as session:
        assert propagate_context(session) is session  # 2.x injects by itself
        with spanguard.run_context(user_id="alice@example.com", tenant_id="acme",
                                   session_id="conv-1"):
            with propagate_requests():
                await session.call_tool("echo", {"text": "run ids"})
            with correlation(tenant_id="other", hasher=HASHER), propagate_requests():
                await session.call_tool("echo", {"text": "explicit ids win"})
            await session.call_tool("echo", {"text": "outside the block"})
    from_run, explicit, outside = (correlation_from_meta(m) for m in recorder.metas)
    assert (from_run.user, from_run.tenant, from_run.session) == (
        hasher("alice@example.com"), hasher("acme"), hasher("conv-1"))
    assert (explicit.tenant, explicit.user) == (HASHER("other"), None)
    assert not outside
    assert all("traceparent" in m for m in recorder.metas)
    wire = json.dumps(recorder.metas)
    assert "alice@example.com" not in wire and "conv-1" not in wire  # hashes only


def test_outgoing_meta_keeps_the_callers_entries_and_adds_the_context() -> None:
    cap = global_capture()
    with cap.tracer_provider.get_tracer("t").start_as_current_span("caller") as span, \
            correlation(user_id="bob", hasher=HASHER):
        meta = outgoing_meta({"progressToken": 7, "traceparent": "stale"})
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert meta["progressToken"] == 7
    assert meta["traceparent"].split("-")[1] == trace_id
    assert correlation_from_meta(meta).user == HASHER("bob")
    assert outgoing_meta() == {}  # no span, no baggage: nothing to carry
