"""The reviewer's and the auditor's terminal: keys, signed decisions, anchors, checks."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from spanguard.cli import main
from spanguard.guardrails import Policy, ToolCall
from spanguard.guardrails.holds import HoldGuard, HoldPending
from spanguard.guardrails.pipeline import build_guards
from spanguard.guardrails.signing import Signer

PAY = ToolCall("payments_send", {"to": "bob", "amount": 5})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def init_reviewer(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["reviewer", "init", "--as", name]) == 0
    out = capsys.readouterr().out
    public = next(line.split(": ", 1)[1] for line in out.splitlines()
                  if line.startswith("public key: "))
    assert f'key = "{public}"' in out
    return public


def policy_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    return path


def hold_via(policy: Policy, maker: str = "agent") -> str:
    [guard] = build_guards(policy, parts=("holds",))
    assert isinstance(guard, HoldGuard)
    decision = guard.check(PAY, maker=maker)
    assert decision is not None and isinstance(decision.error, HoldPending)
    return decision.error.hold_id


def test_reviewer_init_creates_an_owner_only_key_outside_the_home(
        tmp_path: Path, spanguard_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    public = init_reviewer("maria", capsys)
    key = Path(os.environ["SPANGUARD_REVIEWER_KEYS"]) / "maria.key"
    assert mode(key) == 0o600 and mode(key.parent) == 0o700
    assert Signer.from_file(key).public == public
    assert main(["reviewer", "show", "--as", "maria"]) == 0
    assert public in capsys.readouterr().out
    before = key.read_bytes()
    assert main(["reviewer", "init", "--as", "maria"]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err and key.read_bytes() == before
    assert main(["reviewer", "init", "--as", "eve", "--dir", str(spanguard_home / "k")]) == 2
    assert "agent's spanguard home" in capsys.readouterr().err
    assert main(["reviewer", "init", "--as", "ma\u200bria"]) == 2
    assert "U+200B" in capsys.readouterr().err


def test_a_key_readable_by_others_is_refused(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    init_reviewer("maria", capsys)
    key = Path(os.environ["SPANGUARD_REVIEWER_KEYS"]) / "maria.key"
    key.chmod(0o644)
    hold_id = hold_via(Policy.from_mapping({"holds": {"tools": ["payments_*"]}}))
    assert main(["holds", "approve", hold_id, "--as", "maria"]) == 2
    assert "readable by others" in capsys.readouterr().err


def test_holds_approve_signs_with_the_reviewers_key_and_the_call_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    public = init_reviewer("maria", capsys)
    path = policy_file(tmp_path, f'[holds]\ntools = ["payments_*"]\n'
                                 f'[holds.reviewers.maria]\nkey = "{public}"\n')
    policy = Policy.from_file(path)
    hold_id = hold_via(policy)
    assert main(["holds", "approve", hold_id, "--as", "carol", "--policy", str(path)]) == 1
    assert "must be signed with a reviewer key" in capsys.readouterr().out
    assert main(["holds", "approve", hold_id, "--as", "maria", "--policy", str(path),
                 "--reason", "invoice 42"]) == 0
    out = capsys.readouterr().out
    assert "approved by maria" in out and f"signed with {public}" in out
    [guard] = build_guards(policy, parts=("holds",))
    ran = guard.check(PAY, maker="agent")  # type: ignore[attr-defined]
    assert ran is not None and ran.kind == "allow"
    assert main(["audit", "verify", "--policy", str(path)]) == 0
    assert "intact: 3 record(s)" in capsys.readouterr().out


def test_an_unsigned_cli_approval_is_development_mode_and_refused_by_a_reviewer_policy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hold_id = hold_via(Policy.from_mapping({"holds": {"tools": ["payments_*"]}}))
    assert main(["holds", "approve", hold_id, "--as", "carol"]) == 0
    assert "unsigned (development mode)" in capsys.readouterr().out
    signed = Policy.from_mapping({"holds": {"tools": ["payments_*"], "reviewers": {
        "maria": {"key": Signer.generate().public}}}})
    [guard] = build_guards(signed, parts=("holds",))
    refused = guard.check(PAY, maker="agent")  # type: ignore[attr-defined]
    assert refused is not None and refused.kind == "deny" and "not signed" in refused.reason


def test_the_store_is_created_owner_only(spanguard_home: Path) -> None:
    hold_via(Policy.from_mapping({"holds": {"tools": ["payments_*"]}}))
    db = spanguard_home / "guardrails.db"
    assert mode(spanguard_home) == 0o700 and mode(db) == 0o600
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        assert not side.exists() or mode(side) == 0o600


def test_audit_anchor_then_a_cut_tail_fails_verify_expect_head(
        spanguard_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = Policy.from_mapping({"holds": {"tools": ["payments_*"]}})
    hold_via(policy)
    hold_via(policy, maker="agent-2")
    anchor_file = spanguard_home.parent / "anchor.txt"
    assert main(["audit", "anchor", "--out", str(anchor_file)]) == 0
    anchor = capsys.readouterr().out.strip()
    assert anchor.startswith("2:sha256:") and anchor_file.read_text().strip() == anchor
    assert main(["audit", "verify", "--expect-head", anchor]) == 0
    capsys.readouterr()
    conn = sqlite3.connect(spanguard_home / "guardrails.db")
    conn.execute("DELETE FROM audit WHERE seq = 2")
    conn.commit()
    conn.close()
    assert main(["audit", "verify"]) == 0  # the cut is invisible without the anchor
    capsys.readouterr()
    assert main(["audit", "verify", "--expect-head", anchor]) == 1
    assert "BROKEN at record 2" in capsys.readouterr().out
    assert main(["audit", "verify", "--expect-head", "nonsense"]) == 2


def test_an_audit_writer_key_signs_every_record_and_verify_requires_it(
        tmp_path: Path, spanguard_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "writer" / "audit.key"
    assert main(["audit", "keygen", "--out", str(spanguard_home / "audit.key")]) == 2
    capsys.readouterr()
    assert main(["audit", "keygen", "--out", str(key)]) == 0
    out = capsys.readouterr().out
    assert mode(key) == 0o600 and f'writer_key_file = "{key}"' in out
    public = Signer.from_file(key).public
    signed = policy_file(tmp_path, f'[holds]\ntools = ["payments_*"]\n[audit]\n'
                                   f'writer_key = "{public}"\nwriter_key_file = "{key}"\n')
    hold_via(Policy.from_file(signed))
    assert main(["audit", "verify", "--policy", str(signed)]) == 0
    capsys.readouterr()
    hold_via(Policy.from_mapping({"holds": {"tools": ["payments_*"]}}), maker="other")
    assert main(["audit", "verify", "--policy", str(signed)]) == 1
    assert "record 2 (hold.created) is not signed" in capsys.readouterr().out


def test_a_writer_key_without_its_private_half_refuses_to_act(tmp_path: Path) -> None:
    policy = Policy.from_mapping({"holds": {"tools": ["payments_*"]},
                                  "audit": {"writer_key": Signer.generate().public}})
    [guard] = build_guards(policy, parts=("holds",))
    with pytest.raises(Exception, match="no private key to sign"):
        guard.check(PAY, maker="agent")  # type: ignore[attr-defined]
