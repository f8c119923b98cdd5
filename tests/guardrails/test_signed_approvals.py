"""Signed approvals: a row in the store proves nothing; a reviewer's signature does.

Each attack writes the SQLite file directly, as anything running as the agent
could, and the executing side (the hold guard) must refuse the call, void the
approval and audit why; the audit check must name the first bad record.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from spanguard.guardrails import HoldRules, ToolCall
from spanguard.guardrails.approval_proof import sign
from spanguard.guardrails.approvals import (
    Approvals,
    HoldConflict,
    MakerCheckerViolation,
    ReviewerNotAllowed,
    UnsignedApproval,
)
from spanguard.guardrails.audit_check import AuditTrust, check_log
from spanguard.guardrails.holds import ApprovalRefused, HoldGuard, HoldPending
from spanguard.guardrails.reviewers import Reviewer, Reviewers
from spanguard.guardrails.signing import Signer
from spanguard.hashing import payload_hash
from tests.guardrails._holds_support import Clock, approvals_for, separate_connection

MARIA, OPS, OUTSIDER = Signer.generate(), Signer.generate(), Signer.generate()
REVIEWERS = Reviewers([Reviewer("maria", MARIA.public),
                       Reviewer("ops", OPS.public, tools=("git_*",))])
RULES = HoldRules(tools=("payments_*", "git_*"), expires_after=600, reviewers=REVIEWERS)
PAY_A = ToolCall("payments_send", {"to": "bob", "amount": 5})
PAY_B = ToolCall("payments_send", {"to": "mallory", "amount": 5000})
TRUST = AuditTrust(REVIEWERS)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def approvals(tmp_path: Path, clock: Clock) -> Approvals:
    return approvals_for("sqlite", tmp_path, clock=clock)


def held(guard: HoldGuard, call: ToolCall, maker: str = "agent") -> str:
    decision = guard.check(call, maker=maker)
    assert decision is not None and isinstance(decision.error, HoldPending), decision
    return decision.error.hold_id


def rewrite_hold(db: Path, hold_id: str, **changes: Any) -> None:
    """What a compromised agent can do: edit a hold's row (and its indexed columns)."""
    conn = sqlite3.connect(db)
    (raw,) = conn.execute("SELECT record FROM holds WHERE id = ?", (hold_id,)).fetchone()
    record = {**json.loads(raw), **changes}
    conn.execute("UPDATE holds SET record = ?, status = ?, payload_hash = ?, expires_at = ? "
                 "WHERE id = ?", (json.dumps(record), record["status"],
                                  record["payload_hash"], record["expires_at"], hold_id))
    conn.commit()
    conn.close()


def row(db: Path, hold_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    (raw,) = conn.execute("SELECT record FROM holds WHERE id = ?", (hold_id,)).fetchone()
    conn.close()
    return dict(json.loads(raw))


def refused(guard: HoldGuard, call: ToolCall, maker: str = "agent") -> ApprovalRefused:
    decision = guard.check(call, maker=maker)
    assert decision is not None and decision.kind == "deny", decision
    assert isinstance(decision.error, ApprovalRefused), decision.error
    return decision.error


def db_of(tmp_path: Path) -> Path:
    return tmp_path / "guardrails.db"


def test_a_signed_approval_runs_the_call_once_and_the_log_proves_it(
        approvals: Approvals) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = held(guard, PAY_A)
    decided = approvals.approve(hold_id, "maria", "invoice 42", signer=MARIA,
                                reviewers=REVIEWERS)
    assert decided.signed_by == MARIA.public and decided.signature
    allowed = guard.check(PAY_A, maker="agent")
    assert allowed is not None and allowed.kind == "allow"
    again = guard.check(PAY_A, maker="agent")
    assert again is not None and again.kind == "hold"
    check = check_log(approvals.audit.records(), TRUST)
    assert check.ok, check.reason


def test_a_row_forged_as_approved_is_refused_voided_and_audited(
        approvals: Approvals, tmp_path: Path) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = held(guard, PAY_A)
    rewrite_hold(db_of(tmp_path), hold_id, status="approved", checker="cfo")
    refusal = refused(guard, PAY_A)
    assert refusal.hold_id == hold_id and "not signed" in str(refusal)
    assert approvals.get(hold_id).status == "void"
    void = [r for r in approvals.audit.records() if r.event == "hold.void"]
    assert len(void) == 1 and void[0].subject == hold_id and "not signed" in void[0].detail[
        "reason"]
    assert not any(r.event == "hold.executed" for r in approvals.audit.records())
    assert check_log(approvals.audit.records(), TRUST).ok  # a refusal is no violation
    retried = guard.check(PAY_A, maker="agent")  # the agent asks again: a new request
    assert retried is not None and isinstance(retried.error, HoldPending)
    assert retried.error.hold_id != hold_id
    assert "refused" in str(retried.error) and hold_id in str(retried.error)


def test_a_forged_row_with_a_made_up_signature_is_refused(approvals: Approvals,
                                                          tmp_path: Path) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = held(guard, PAY_A)
    forged = OUTSIDER.sign(b"anything")
    rewrite_hold(db_of(tmp_path), hold_id, status="approved", checker="maria",
                 signature=forged, signed_by=MARIA.public)
    assert "signature does not match" in str(refused(guard, PAY_A))
    rewrite_hold(db_of(tmp_path), held(guard, PAY_A), status="approved", checker="maria",
                 signature=forged, signed_by=OUTSIDER.public)
    assert "does not list" in str(refused(guard, PAY_A))


def test_an_altered_payload_hash_is_refused(approvals: Approvals, tmp_path: Path) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = held(guard, PAY_A)
    approvals.approve(hold_id, "maria", signer=MARIA, reviewers=REVIEWERS)
    # Point the approved row at the payload the agent wants to run instead.
    rewrite_hold(db_of(tmp_path), hold_id, payload_hash=payload_hash(dict(PAY_B.arguments)))
    assert "signature does not match" in str(refused(guard, PAY_B))
    assert approvals.get(hold_id).status == "void"


def test_an_altered_checker_is_refused(approvals: Approvals, tmp_path: Path) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = held(guard, PAY_A)
    approvals.approve(hold_id, "maria", signer=MARIA, reviewers=REVIEWERS)
    rewrite_hold(db_of(tmp_path), hold_id, checker="cfo")
    assert "signature does not match" in str(refused(guard, PAY_A))


def test_a_signature_replayed_on_another_hold_is_refused(approvals: Approvals,
                                                         tmp_path: Path) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_a, hold_b = held(guard, PAY_A), held(guard, PAY_B)
    approvals.approve(hold_a, "maria", signer=MARIA, reviewers=REVIEWERS)
    genuine = row(db_of(tmp_path), hold_a)
    rewrite_hold(db_of(tmp_path), hold_b, status="approved", checker=genuine["checker"],
                 signature=genuine["signature"], signed_by=genuine["signed_by"])
    assert "signature does not match" in str(refused(guard, PAY_B))
    assert approvals.get(hold_a).status == "approved"  # A's own approval still stands
    allowed = guard.check(PAY_A, maker="agent")
    assert allowed is not None and allowed.kind == "allow"


def test_an_expired_signature_is_refused_even_with_the_expiry_rewritten(
        approvals: Approvals, tmp_path: Path, clock: Clock) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = held(guard, PAY_A)
    approvals.approve(hold_id, "maria", signer=MARIA, reviewers=REVIEWERS)
    clock.advance(601)
    later = clock.now + 3600  # keep the store from expiring it
    rewrite_hold(db_of(tmp_path), hold_id, expires_at=later)
    assert "signature does not match" in str(refused(guard, PAY_A))
    # Untouched, an approval past its expiry simply lapses: the call is held anew.
    other = held(guard, PAY_B)
    approvals.approve(other, "maria", signer=MARIA, reviewers=REVIEWERS)
    clock.advance(601)
    again = guard.check(PAY_B, maker="agent")
    assert again is not None and isinstance(again.error, HoldPending)
    assert approvals.get(other).status == "expired"


def test_a_reviewer_not_allowed_for_the_tool_cannot_approve_it(approvals: Approvals,
                                                               tmp_path: Path) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = held(guard, PAY_A)
    with pytest.raises(ReviewerNotAllowed, match="may not decide"):
        approvals.approve(hold_id, "ops", signer=OPS, reviewers=REVIEWERS)
    # ops really signs (outside the API) and the row is written by hand: still refused.
    hold = approvals.get(hold_id)
    rewrite_hold(db_of(tmp_path), hold_id, status="approved", checker="ops",
                 signature=sign(hold, "ops", "approved", OPS), signed_by=OPS.public)
    assert "may not decide payments_send" in str(refused(guard, PAY_A))
    git = held(guard, ToolCall("git_reset", {"repo": "/r"}))
    approvals.approve(git, "ops", signer=OPS, reviewers=REVIEWERS)  # within ops' scope
    allowed = guard.check(ToolCall("git_reset", {"repo": "/r"}), maker="agent")
    assert allowed is not None and allowed.kind == "allow"


def test_a_key_decides_who_the_checker_is(approvals: Approvals) -> None:
    guard = HoldGuard(RULES, approvals=approvals)
    hold_id = held(guard, PAY_A)
    with pytest.raises(UnsignedApproval):
        approvals.approve(hold_id, "maria", reviewers=REVIEWERS)
    with pytest.raises(ReviewerNotAllowed, match="not a reviewer key"):
        approvals.approve(hold_id, "maria", signer=OUTSIDER, reviewers=REVIEWERS)
    with pytest.raises(ReviewerNotAllowed, match="belongs to reviewer 'maria'"):
        approvals.approve(hold_id, "cfo", signer=MARIA, reviewers=REVIEWERS)
    decided = approvals.approve(hold_id, " MARIA ", signer=MARIA, reviewers=REVIEWERS)
    assert decided.checker == "maria"  # the policy's name for the key


def test_an_unsigned_approval_is_refused_where_the_policy_lists_reviewers(
        approvals: Approvals) -> None:
    unsigned_guard = HoldGuard(HoldRules(tools=("payments_*",)), approvals=approvals)
    hold_id = held(unsigned_guard, PAY_A)
    approvals.approve(hold_id, "carol")  # development mode: no keys anywhere
    signed_guard = HoldGuard(RULES, approvals=approvals)
    assert "not signed" in str(refused(signed_guard, PAY_A))


def test_the_maker_cannot_be_the_reviewer_even_under_another_spelling(
        approvals: Approvals) -> None:
    cyrillic = Reviewers([Reviewer("b\u043et", MARIA.public)])  # "bоt"
    guard = HoldGuard(HoldRules(tools=("payments_*",), reviewers=cyrillic),
                      approvals=approvals)
    hold_id = held(guard, PAY_A, maker="bot")
    with pytest.raises(MakerCheckerViolation):
        approvals.approve(hold_id, "b\u043et", signer=MARIA, reviewers=cyrillic)


def race(handles: list[Approvals], hold_id: str, signers: list[Signer],
         reviewers: Reviewers) -> list[str]:
    """Reviewer i approves (even i) or rejects (odd i) at once, each through handle i."""
    barrier = threading.Barrier(len(handles))
    outcomes: list[str] = []

    def decide(index: int, approvals: Approvals) -> None:
        barrier.wait()
        act = approvals.approve if index % 2 == 0 else approvals.reject
        try:
            outcomes.append(act(hold_id, f"r{index}", signer=signers[index],
                                reviewers=reviewers).status)
        except HoldConflict:
            outcomes.append("lost")

    threads = [threading.Thread(target=decide, args=(i, h)) for i, h in enumerate(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_signed_approve_and_reject_racing_have_exactly_one_winner(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    signers = [Signer.generate() for _ in range(6)]
    reviewers = Reviewers([Reviewer(f"r{i}", key.public) for i, key in enumerate(signers)])
    rules = HoldRules(tools=("payments_*",), reviewers=reviewers)
    for _round in range(3):
        first = approvals_for(kind, tmp_path / str(_round), redis_url)
        handles = [first] * 6 if kind == "memory" else [
            separate_connection(first) for _ in range(6)]
        hold_id = held(HoldGuard(rules, approvals=first), PAY_A)
        outcomes = race(handles, hold_id, signers, reviewers)
        winners = [o for o in outcomes if o != "lost"]
        assert len(winners) == 1, outcomes
        final = first.get(hold_id)
        assert final.status == winners[0]
        winner = reviewers.by_key(final.signed_by)
        assert winner is not None and winner.name == final.checker
        guard = HoldGuard(rules, approvals=first)
        decision = guard.check(PAY_A, maker="agent")
        assert decision is not None
        # approved: runs once; rejected: the call made again is a new request
        assert decision.kind == ("allow" if final.status == "approved" else "hold")
        assert check_log(first.audit.records(), AuditTrust(reviewers)).ok
