"""The maker-checker guarantees, each proven against the stores that carry them."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from spanguard.guardrails import (
    ApprovalError,
    HoldConflict,
    HoldExpired,
    HoldPending,
    HoldRules,
    MakerCheckerViolation,
    ToolCall,
)
from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.audit import AuditLog, MemoryAuditBackend, open_audit_log
from spanguard.guardrails.holds import HoldGuard
from tests.guardrails._holds_support import (
    Clock,
    approvals_for,
    memory_approvals,
    separate_connection,
)

RULES = HoldRules(tools=("payments_*",), expires_after=3600)
PAY_A = ToolCall("payments_send", {"to": "bob", "amount": 5})
PAY_B = ToolCall("payments_send", {"to": "mallory", "amount": 5000})


def hold(guard: HoldGuard, call: ToolCall, maker: str = "alice") -> str:
    decision = guard.check(call, maker=maker)
    assert decision is not None and isinstance(decision.error, HoldPending)
    return decision.error.hold_id


@pytest.fixture(params=["memory", "sqlite"])
def approvals(request: pytest.FixtureRequest, tmp_path: Path) -> Approvals:
    return approvals_for(request.param, tmp_path)


def test_maker_cannot_approve_own_request(approvals: Approvals) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = hold(guard, PAY_A)
    for same_person in ("alice", " Alice "):
        with pytest.raises(MakerCheckerViolation):
            approvals.approve(hold_id, same_person)
    with pytest.raises(ApprovalError):
        approvals.approve(hold_id, "  ")
    assert approvals.get(hold_id).status == "pending"
    decision = guard.check(PAY_A, maker="alice")
    assert decision is not None and decision.kind == "hold"


def test_approval_of_payload_a_cannot_execute_payload_b(approvals: Approvals) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_a = hold(guard, PAY_A)
    approvals.approve(hold_a, "carol")
    decision = guard.check(PAY_B, maker="alice")
    assert decision is not None and decision.kind == "hold"
    assert decision.error is not None and decision.error.hold_id != hold_a  # type: ignore[attr-defined]
    assert approvals.get(hold_a).status == "approved"  # A's approval is untouched
    assert approvals.consume(approvals.get(hold_a), "sha256:" + "0" * 64) is None
    same_args_other_maker = guard.check(PAY_A, maker="mallory")
    assert same_args_other_maker is not None and same_args_other_maker.kind == "hold"
    allowed = guard.check(PAY_A, maker="alice")
    assert allowed is not None and allowed.kind == "allow"


def test_used_approval_cannot_be_replayed(approvals: Approvals) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = hold(guard, PAY_A)
    approvals.approve(hold_id, "carol")
    first = guard.check(PAY_A, maker="alice")
    assert first is not None and first.kind == "allow"
    replay = guard.check(PAY_A, maker="alice")
    assert replay is not None and replay.kind == "hold"
    assert approvals.consume(approvals.get(hold_id), approvals.get(hold_id).payload_hash) is None
    same_call_id = ToolCall("payments_send", dict(PAY_A.arguments), call_id="call-1")
    call_hold = hold(guard, same_call_id)
    approvals.approve(call_hold, "carol")
    assert guard.check(same_call_id, maker="alice").kind == "allow"  # type: ignore[union-attr]
    replayed = guard.check(same_call_id, maker="alice")
    assert replayed is not None and replayed.kind == "deny"
    assert "already used" in replayed.reason


def test_expired_approval_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    approvals = approvals_for("sqlite", tmp_path, clock=clock)
    guard = HoldGuard(HoldRules(tools=("payments_*",), expires_after=60), approvals=approvals)
    late = hold(guard, PAY_A)
    clock.advance(61)
    with pytest.raises(HoldExpired):
        approvals.approve(late, "carol")
    approved_then_expired = hold(guard, PAY_B)
    approvals.approve(approved_then_expired, "carol")
    clock.advance(61)
    decision = guard.check(PAY_B, maker="alice")
    assert decision is not None and decision.kind == "hold"
    assert decision.error is not None and decision.error.hold_id != approved_then_expired  # type: ignore[attr-defined]
    assert approvals.get(approved_then_expired).status == "expired"
    assert "hold.expired" in [r.event for r in approvals.audit.records()]


def test_rejected_call_never_executes(approvals: Approvals) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    with_id = ToolCall("payments_send", dict(PAY_A.arguments), call_id="call-7")
    hold_id = hold(guard, with_id)
    approvals.reject(hold_id, "carol", "wrong account")
    with pytest.raises(HoldConflict):
        approvals.approve(hold_id, "dave")
    same_call = guard.check(with_id, maker="alice")
    assert same_call is not None and same_call.kind == "deny"
    assert "wrong account" in same_call.reason and "carol" in same_call.reason
    retried = guard.check(PAY_A, maker="alice")  # a new attempt needs a new approval
    assert retried is not None and retried.kind == "hold"
    assert approvals.get(hold_id).status == "rejected"
    assert not any(r.event == "hold.executed" for r in approvals.audit.records())


def _race(approvals_factory: list[Approvals], hold_id: str) -> list[str]:
    """Approve and reject one request at once, each through its own store handle."""
    barrier = threading.Barrier(len(approvals_factory))
    outcomes: list[str] = []
    lock = threading.Lock()

    def decide(index: int, approvals: Approvals) -> None:
        barrier.wait()
        try:
            if index % 2 == 0:
                approvals.approve(hold_id, f"checker{index}")
                result = "approved"
            else:
                approvals.reject(hold_id, f"checker{index}", "race")
                result = "rejected"
        except HoldConflict:
            result = "lost"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=decide, args=(i, a))
               for i, a in enumerate(approvals_factory)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_concurrent_approve_and_reject_exactly_one_wins(kind: str, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    for _round in range(5):
        first = approvals_for(kind, tmp_path, redis_url)
        if kind == "memory":
            handles = [first] * 6
        else:  # separate connections, as separate processes would have
            handles = [separate_connection(first) for _ in range(6)]
        hold_id = hold(HoldGuard(RULES, approvals=first), PAY_A)
        outcomes = _race(handles, hold_id)
        winners = [o for o in outcomes if o != "lost"]
        assert len(winners) == 1, outcomes
        assert first.get(hold_id).status == winners[0]
        decided = [r for r in first.audit.records()
                   if r.event in ("hold.approved", "hold.rejected")]
        assert len(decided) == 1
        assert first.audit.verify().ok
        if kind == "sqlite":
            (tmp_path / "guardrails.db").unlink()
            for suffix in ("-wal", "-shm"):
                (tmp_path / f"guardrails.db{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_one_approval_executes_once_under_concurrency(kind: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    first = approvals_for(kind, tmp_path, redis_url)
    hold_id = hold(HoldGuard(RULES, approvals=first), PAY_A)
    first.approve(hold_id, "carol")
    guards = [HoldGuard(RULES, approvals=separate_connection(first)) for _ in range(6)]
    barrier = threading.Barrier(len(guards))
    kinds: list[str] = []

    def run(guard: HoldGuard) -> None:
        barrier.wait()
        decision = guard.check(PAY_A, maker="alice")
        kinds.append(decision.kind if decision else "none")

    threads = [threading.Thread(target=run, args=(g,)) for g in guards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert kinds.count("allow") == 1, kinds


# --- the audit chain -------------------------------------------------------------


def _filled_log(tmp_path: Path) -> tuple[AuditLog, Path]:
    db = tmp_path / "audit.db"
    log = open_audit_log(f"sqlite:///{db}")
    for n in range(5):
        log.append("hold.created", actor="alice", subject=f"hold_{n}", tool="payments_send")
    assert log.verify().ok and log.verify().records == 5
    return log, db


def _rewrite(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_tampered_audit_record_is_detected(tmp_path: Path) -> None:
    log, db = _filled_log(tmp_path)
    row = sqlite3.connect(db).execute("SELECT record FROM audit WHERE seq = 3").fetchone()
    _rewrite(db, "UPDATE audit SET record = ? WHERE seq = 3",
             row[0].replace('"alice"', '"mallory"'))
    check = log.verify()
    assert not check.ok and check.broken_seq == 3 and "altered" in check.reason


def test_deleted_audit_record_is_detected(tmp_path: Path) -> None:
    log, db = _filled_log(tmp_path)
    _rewrite(db, "DELETE FROM audit WHERE seq = 2")
    check = log.verify()
    assert not check.ok and check.broken_seq == 3


def test_reordered_audit_records_are_detected(tmp_path: Path) -> None:
    log, db = _filled_log(tmp_path)
    conn = sqlite3.connect(db)
    rows = dict(conn.execute("SELECT seq, record FROM audit WHERE seq IN (2, 4)").fetchall())
    conn.close()
    _rewrite(db, "UPDATE audit SET record = ? WHERE seq = 2", rows[4])
    _rewrite(db, "UPDATE audit SET record = ? WHERE seq = 4", rows[2])
    check = log.verify()
    assert not check.ok and check.broken_seq == 4  # stored at position 2, claims seq 4


def test_reordered_records_with_rewritten_numbers_are_detected() -> None:
    backend = MemoryAuditBackend()
    log = AuditLog(backend)
    for n in range(4):
        log.append("verification.verified", subject=f"tool_{n}")
    backend.rows[1], backend.rows[2] = backend.rows[2], backend.rows[1]
    check = log.verify()
    assert not check.ok and check.broken_seq == 3


def test_redis_audit_chain_detects_tampering(redis_url: str) -> None:
    import json

    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    log = open_audit_log(redis_url)
    for n in range(3):
        log.append("hold.approved", actor="carol", subject=f"hold_{n}")
    assert log.verify().ok
    record = json.loads(client.lindex("spanguard:audit", 1))
    record["actor"] = "alice"
    client.lset("spanguard:audit", 1, json.dumps(record))
    assert log.verify().broken_seq == 2


def test_memory_approvals_share_nothing_between_instances() -> None:
    a, b = memory_approvals(), memory_approvals()
    hold(HoldGuard(RULES, approvals=a), PAY_A)
    assert b.list() == []
