"""The taxonomy guards on the in-process MCP path, with the SDK's own client and server.

The parity tests (test_gate_parity.py) pin that the proxy and ``instrument_server``
answer alike; these pin what only the caller's identity decides: a result of the
caller's own tenant passes, another tenant's is withheld for every session, and an
argument check records the schema's hash on the call's span.
"""

from __future__ import annotations

from pathlib import Path

from opentelemetry.trace import SpanKind

from spanguard import semconv as sc
from spanguard.config import current
from spanguard.mcp_bridge import instrument_server
from tests.mcp.mcp_helpers import connect
from tests.mcp.sdk_otel import finished, global_capture
from tests.mcp.servers.parity_server import build


def caller(tenant: str) -> dict[str, str]:
    return {"baggage": f"{sc.TENANT_HASH}={current().hasher(tenant)}"}


async def test_a_result_of_the_callers_own_tenant_passes_anothers_is_withheld(
        tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[tenant_scope]\n")
    cap = global_capture()
    executed: list[str] = []
    server = build(executed)
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider)
    # One session per caller: an MCP session is one run, whose tenant its first call names.
    async with connect(server) as session:
        own = await session.call_tool("lookup", {"key": "k"}, meta=caller("globex"))
    async with connect(server) as session:
        other = await session.call_tool("lookup", {"key": "k"}, meta=caller("acme"))

    assert executed == ["lookup", "lookup"]
    assert own.is_error is False and own.structured_content == {
        "tenant_id": "globex", "key": "k", "balance": "1200 EUR"}
    assert other.is_error is True and "1200 EUR" not in other.model_dump_json()
    guardrail = [s for s in finished(cap, "guardrail tenant_scope")]
    assert len(guardrail) == 1
    attributes = dict(guardrail[0].attributes or {})
    assert attributes[sc.TENANT_HASH] == current().hasher("acme")
    assert attributes[sc.TENANT_SCOPE_FOREIGN_HASHES] == (current().hasher("globex"),)
    assert "globex" not in repr(attributes)


async def test_the_refused_calls_span_carries_the_schema_hash_and_summary(
        tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[tool_arguments]\n")
    cap = global_capture()
    server = build([])
    instrument_server(server, policy=policy, tracer_provider=cap.tracer_provider)
    async with connect(server) as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
        refused = await session.call_tool("transfer", {"to": "bob"})
        ran = await session.call_tool("transfer", {"to": "bob", "amount": 3})

    assert refused.is_error is True and ran.is_error is False
    [span] = [s for s in finished(cap, "tools/call transfer")
              if s.kind is SpanKind.SERVER and (s.attributes or {}).get(sc.ERROR_TYPE)]
    assert span.attributes[sc.ERROR_TYPE] == "tool_argument_error"
    [guardrail] = finished(cap, "guardrail tool_arguments")
    from spanguard.guardrails.tool_arguments import ToolSchema

    assert guardrail.attributes[sc.TOOL_SCHEMA_HASH] == ToolSchema(
        listed["transfer"].input_schema).digest
    assert guardrail.attributes[sc.VALIDATION_SUMMARY] == "$: missing required ['amount']"
