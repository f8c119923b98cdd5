"""The audit log proves what happened: rewriting, recomputing, truncating are caught.

A hash chain alone can be recomputed by whoever can write the store. Each test
here does exactly that (or cuts the tail) and expects ``check_log`` to name the
first bad record: by the audit writer's signature, by the reviewer's signature
of the approval, by the meaning of the hold records, or by the anchored head.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from spanguard.guardrails import HoldRules, ToolCall
from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.audit import AuditLog, check_chain
from spanguard.guardrails.audit_check import AuditTrust, check_log
from spanguard.guardrails.holds import HoldGuard, HoldPending
from spanguard.guardrails.reviewers import Reviewer, Reviewers
from spanguard.guardrails.signing import Signer
from spanguard.guardrails.stores import SQLiteStore
from spanguard.guardrails.stores.records import AuditRecord
from tests.guardrails._holds_support import Clock

WRITER, MARIA, MALLORY = Signer.generate(), Signer.generate(), Signer.generate()
REVIEWERS = Reviewers([Reviewer("maria", MARIA.public)])
RULES = HoldRules(tools=("payments_*",), expires_after=600, reviewers=REVIEWERS)
PAY = ToolCall("payments_send", {"to": "bob", "amount": 5})
SIGNED = AuditTrust(REVIEWERS, WRITER.public)


def story(db: Path, clock: Clock, *, writer: Signer | None = WRITER,
          rules: HoldRules = RULES) -> tuple[Approvals, str]:
    """hold.created, hold.approved (maria), hold.executed, then a refusal record."""
    store = SQLiteStore(db)
    agent = Approvals.over(store, clock, signer=writer)
    guard = HoldGuard(rules, approvals=agent)
    decision = guard.check(PAY, maker="agent")
    assert decision is not None and isinstance(decision.error, HoldPending)
    hold_id = decision.error.hold_id
    reviewer = Approvals.over(SQLiteStore(db), clock, signer=MARIA)
    signer = MARIA if rules.reviewers else None
    reviewer.approve(hold_id, "maria", signer=signer, reviewers=rules.reviewers)
    ran = guard.check(PAY, maker="agent")
    assert ran is not None and ran.kind == "allow"
    agent.audit.append("budget.refused", actor="agent", subject="gpt-4o", reason="over")
    return agent, hold_id


def rows(db: Path) -> list[dict[str, object]]:
    conn = sqlite3.connect(db)
    out = [json.loads(r[0]) for r in conn.execute("SELECT record FROM audit ORDER BY seq")]
    conn.close()
    return out


def rewrite_and_recompute(db: Path, seq: int, **changes: object) -> None:
    """Edit record ``seq`` and recompute every hash from there on, as a forger would
    (signatures cannot be recomputed without the keys, so they are left as they were)."""
    records = [AuditRecord.from_json(r) for r in rows(db)]
    prev = records[seq - 2].hash if seq > 1 else records[0].prev_hash
    conn = sqlite3.connect(db)
    for record in records[seq - 1:]:
        if record.seq == seq:
            record = replace(record, **changes)  # type: ignore[arg-type]
        record = replace(record, prev_hash=prev)
        record = replace(record, hash=record.computed_hash())
        conn.execute("UPDATE audit SET hash = ?, record = ? WHERE seq = ?",
                     (record.hash, json.dumps(record.to_json()), record.seq))
        prev = record.hash
    conn.commit()
    conn.close()


def test_an_intact_signed_story_verifies(tmp_path: Path) -> None:
    agent, _ = story(tmp_path / "g.db", Clock())
    records = agent.audit.records()
    assert [r.event for r in records] == ["hold.created", "hold.approved", "hold.executed",
                                          "budget.refused"]
    assert [r.signer for r in records] == [WRITER.public, MARIA.public, WRITER.public,
                                           WRITER.public]
    check = check_log(records, SIGNED)
    assert check.ok and check.notes == () and check.anchor == f"4:{records[-1].hash}"


def test_a_rewritten_record_with_the_chain_recomputed_is_named(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    agent, _ = story(db, Clock())
    rewrite_and_recompute(db, 4, actor="someone-else")  # hide who was refused
    records = agent.audit.records()
    assert check_chain(records).ok  # the chain alone is fooled
    check = check_log(records, SIGNED)
    assert not check.ok and check.broken_seq == 4 and "signature does not match" in check.reason


def test_stripping_the_signatures_is_named(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    agent, _ = story(db, Clock())
    rewrite_and_recompute(db, 3, signer=None, signature=None)
    check = check_log(agent.audit.records(), SIGNED)
    assert not check.ok and check.broken_seq == 3 and "not signed" in check.reason


def test_a_record_signed_by_an_unlisted_key_is_named(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    agent, _ = story(db, Clock())
    AuditLog(SQLiteStore(db).audit, signer=MALLORY).append("hold.expired", subject="x")
    check = check_log(agent.audit.records(), SIGNED)
    assert not check.ok and check.broken_seq == 5 and "does not list" in check.reason


def test_a_recomputed_approval_record_fails_on_the_reviewer_signature(tmp_path: Path) -> None:
    """No audit writer key: the reviewer's signature of the approval still proves it."""
    db = tmp_path / "g.db"
    agent, _ = story(db, Clock(), writer=None)
    rewrite_and_recompute(db, 2, actor="cfo", signer=None, signature=None)
    check = check_log(agent.audit.records(), AuditTrust(REVIEWERS))
    assert not check.ok and check.broken_seq == 2
    assert "approval of hold" in check.reason and "not valid" in check.reason


def test_an_execution_without_an_approval_is_named_even_in_unsigned_mode(
        tmp_path: Path) -> None:
    """The issue's report: a hand-written 'approved' row executed in development mode,
    and the chain still said intact. The meaning check names the execution."""
    db = tmp_path / "g.db"
    clock = Clock()
    store = SQLiteStore(db)
    agent = Approvals.over(store, clock)
    guard = HoldGuard(HoldRules(tools=("payments_*",)), approvals=agent)
    decision = guard.check(PAY, maker="agent")
    assert decision is not None and isinstance(decision.error, HoldPending)
    hold_id = decision.error.hold_id
    conn = sqlite3.connect(db)
    (raw,) = conn.execute("SELECT record FROM holds WHERE id = ?", (hold_id,)).fetchone()
    conn.execute("UPDATE holds SET status = 'approved', record = ? WHERE id = ?",
                 (json.dumps({**json.loads(raw), "status": "approved", "checker": "cfo"}),
                  hold_id))
    conn.commit()
    conn.close()
    ran = guard.check(PAY, maker="agent")
    assert ran is not None and ran.kind == "allow"  # development mode trusts the row
    records = agent.audit.records()
    assert check_chain(records).ok
    check = check_log(records)
    assert not check.ok and check.broken_seq == 2
    assert "executed without a valid approval" in check.reason
    assert any("unsigned development mode" in note for note in check.notes)


def test_a_truncated_tail_is_detected_against_the_anchor(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    agent, _ = story(db, Clock())
    anchor = check_log(agent.audit.records(), SIGNED).anchor
    agent.audit.append("verification.verified", actor="agent", subject="payments_send")
    assert check_log(agent.audit.records(), SIGNED, expect_head=anchor).ok  # grew: fine
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM audit WHERE seq >= 3")
    conn.commit()
    conn.close()
    records = agent.audit.records()
    assert check_log(records, SIGNED).ok  # without the anchor a cut tail looks whole
    check = check_log(records, SIGNED, expect_head=anchor)
    assert not check.ok and check.broken_seq == 3 and "truncated" in check.reason


def test_a_tail_rewritten_after_the_anchor_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    agent, _ = story(db, Clock(), writer=None)
    anchor = check_log(agent.audit.records()).anchor
    rewrite_and_recompute(db, 4, detail={"reason": "nothing happened"})
    check = check_log(agent.audit.records(), expect_head=anchor)
    assert not check.ok and check.broken_seq == 4 and "not the anchored one" in check.reason


def _log(clock: Clock) -> AuditLog:
    return AuditLog(SQLiteStore(":memory:").audit, clock)


@pytest.mark.parametrize(("events", "bad", "words"), [
    ([("hold.approved", "carol"), ("hold.approved", "dave")], 3, "already decided"),
    ([("hold.approved", "carol"), ("hold.executed", "agent"), ("hold.executed", "agent")],
     4, "already executed"),
    ([("hold.approved", "Agent"), ("hold.executed", "agent")], 2, "approved by its maker"),
    ([("hold.rejected", "carol"), ("hold.executed", "agent")], 3, "without a valid approval"),
    ([("hold.approved", "carol"), ("hold.void", None), ("hold.executed", "agent")], 4,
     "without a valid approval"),
], ids=["two-approvals", "two-executions", "maker-approves", "rejected-then-run",
        "voided-then-run"])
def test_the_meaning_of_the_hold_records_is_checked(events: list[tuple[str, str | None]],
                                                    bad: int, words: str) -> None:
    clock = Clock()
    log = _log(clock)
    log.append("hold.created", actor="agent", subject="hold_1", tool="payments_send",
               payload_hash="sha256:" + "1" * 64, expires_at=clock.now + 600)
    for event, actor in events:
        clock.advance(1)
        log.append(event, actor=actor, subject="hold_1")
    check = check_log(log.records())
    assert not check.ok and check.broken_seq == bad and words in check.reason


def test_an_approval_after_expiry_and_an_unknown_hold_are_named() -> None:
    clock = Clock()
    log = _log(clock)
    log.append("hold.created", actor="agent", subject="hold_1", expires_at=clock.now + 60)
    clock.advance(61)
    log.append("hold.approved", actor="carol", subject="hold_1")
    assert check_log(log.records()).ok  # an approval that never ran proves nothing wrong
    log.append("hold.executed", actor="agent", subject="hold_1")
    check = check_log(log.records())
    assert check.broken_seq == 2 and "after it expired" in check.reason
    other = _log(clock)
    other.append("hold.executed", actor="agent", subject="hold_9")
    assert check_log(other.records()).broken_seq == 1


def test_reading_holds_writes_nothing_so_a_signed_log_stays_signed(tmp_path: Path) -> None:
    clock = Clock()
    db = tmp_path / "g.db"
    agent = Approvals.over(SQLiteStore(db), clock, signer=WRITER)
    guard = HoldGuard(RULES, approvals=agent)
    decision = guard.check(PAY, maker="agent")
    assert decision is not None and isinstance(decision.error, HoldPending)
    clock.advance(601)
    reader = Approvals.over(SQLiteStore(db), clock, persist_expiry=False)  # holds list/show
    assert [h.status for h in reader.list()] == ["expired"]
    assert reader.store.get(decision.error.hold_id).status == "pending"  # type: ignore[union-attr]
    assert len(agent.audit.records()) == 1
    renewed = guard.check(PAY, maker="agent")  # the executing side records the expiry
    assert renewed is not None and isinstance(renewed.error, HoldPending)
    records = agent.audit.records()
    assert [r.event for r in records] == ["hold.created", "hold.expired", "hold.created"]
    assert check_log(records, SIGNED).ok
