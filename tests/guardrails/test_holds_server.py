"""A hold names the MCP server its call goes to; an approval never crosses servers."""

from __future__ import annotations

import pytest

from spanguard.guardrails import HoldPending, HoldRules, ToolCall
from spanguard.guardrails.holds import HoldGuard, hold_payload_hash, hold_result_payload
from spanguard.guardrails.stores import MemoryStore, RedisStore, SQLiteStore, Store
from spanguard.guardrails.stores.records import HoldRecord
from spanguard.hashing import payload_hash
from tests.guardrails._holds_support import memory_approvals


def wipe(server: str | None) -> ToolCall:
    return ToolCall("wipe", {"db": "prod"}, server=server)


def test_an_approval_for_one_server_does_not_release_the_call_on_another() -> None:
    approvals = memory_approvals()
    guard = HoldGuard(HoldRules(tools=("wipe",)), approvals=approvals)
    staging = guard.check(wipe("staging"), maker="alice")
    assert staging is not None and isinstance(staging.error, HoldPending)
    approvals.approve(staging.error.hold_id, "bob")

    prod = guard.check(wipe("prod"), maker="alice")
    assert prod is not None and prod.kind == "hold"
    assert isinstance(prod.error, HoldPending)
    assert prod.error.hold_id != staging.error.hold_id
    assert approvals.get(staging.error.hold_id).status == "approved"  # not spent on prod

    ran = guard.check(wipe("staging"), maker="alice")
    assert ran is not None and ran.kind == "allow"
    assert approvals.get(staging.error.hold_id).status == "executed"


def test_the_hold_record_the_summary_and_the_payload_name_the_server() -> None:
    approvals = memory_approvals()
    guard = HoldGuard(HoldRules(tools=("wipe",)), approvals=approvals)
    decision = guard.check(wipe("prod-db"), maker="alice")
    assert decision is not None and isinstance(decision.error, HoldPending)
    hold = approvals.get(decision.error.hold_id)
    assert hold.server == "prod-db"
    assert hold.summary.startswith("alice asks to run wipe on server prod-db with ")
    assert hold.payload_hash == payload_hash(
        {"arguments": {"db": "prod"}, "server": "prod-db"})
    assert hold_result_payload(decision.error)["structuredContent"]["spanguard_hold"][
        "server"] == "prod-db"
    created = approvals.audit.records()[0]
    assert created.detail["server"] == "prod-db"


def test_a_call_outside_mcp_keeps_the_arguments_hash_of_holds_made_before() -> None:
    assert hold_payload_hash(wipe(None)) == payload_hash({"db": "prod"})
    assert hold_payload_hash(wipe("a")) != hold_payload_hash(wipe("b"))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_every_store_keeps_the_server_of_a_hold(kind: str, tmp_path: object,
                                                request: pytest.FixtureRequest) -> None:
    store: Store
    if kind == "memory":
        store = MemoryStore()
    elif kind == "sqlite":
        store = SQLiteStore(f"{tmp_path}/holds.db")
    else:
        store = RedisStore(request.getfixturevalue("redis_url"))
    try:
        record = HoldRecord(id=f"hold_server_{kind}", tool="wipe", payload_hash="sha256:x",
                            maker="alice", risk_tier="high", reason="r", created_at=1.0,
                            expires_at=2e10, server="staging")
        store.holds.create(record)
        assert store.holds.get(record.id) == record
        assert [h.server for h in store.holds.matching("wipe", "sha256:x")] == ["staging"]
    finally:
        store.close()
