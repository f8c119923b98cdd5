"""``spanguard audit verify``: a log that proves, not just links.

:func:`check_log` walks the records once, in stored order, and names the first
one that fails any of three checks:

1. **The chain** (:func:`~spanguard.guardrails.audit.check_chain`): each record's
   hash covers its content and the previous hash.
2. **The keys**: a signed record's signature must match its hash; where the
   policy has an ``[audit] writer_key``, every record must be signed, by that key
   or a reviewer's. A rewritten record whose later hashes were all recomputed
   fails here, at the rewritten one: its signer's key is not the rewriter's.
3. **The meaning** of the hold records: a request has at most one decision, and
   every ``hold.executed`` follows exactly one ``hold.approved`` of the same
   request (not voided, not rejected), made by a checker other than the maker,
   before the request expired; with reviewers in the policy, that approval
   carries a valid signature of the canonical decision by a reviewer allowed
   for the tool, its class and its server. An approval that fails these checks
   is a violation once its hold is executed (named at the approval record); one
   the executing side refused (``hold.void``) is an attempt the log rightly
   records, not a violation.

And **the head**: ``expect_head`` (``SEQ:HASH`` from ``spanguard audit anchor``,
kept outside the store) must still be in the log, unchanged, so a cut-off tail
is detected.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from spanguard.errors import ConfigError
from spanguard.guardrails.approval_proof import signature_problem, statement
from spanguard.guardrails.audit import AuditCheck
from spanguard.guardrails.identity import same_identity
from spanguard.guardrails.reviewers import Reviewers
from spanguard.guardrails.signing import parse_public_key, verify
from spanguard.guardrails.stores.records import GENESIS, AuditRecord, HoldRecord

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy


@dataclass(frozen=True)
class AuditTrust:
    """The keys a log is checked against (from a policy, or none: chain and meaning only)."""

    reviewers: Reviewers = field(default_factory=Reviewers)
    writer_key: str | None = None

    @classmethod
    def of(cls, policy: Policy | None) -> AuditTrust:
        if policy is None:
            return cls()
        reviewers = policy.holds.reviewers if policy.holds is not None else Reviewers()
        writer = policy.audit.writer_key if policy.audit is not None else None
        return cls(reviewers, writer)

    def trusted(self, key: str | None) -> bool:
        return key is not None and (key == self.writer_key or
                                    self.reviewers.by_key(key) is not None)


class _Violation(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason


@dataclass
class _Hold:
    created: AuditRecord
    decision: AuditRecord | None = None
    approved: bool = False
    problem: str | None = None  # why the approval does not count, if it does not
    executed: AuditRecord | None = None


def check_log(records: Iterable[AuditRecord], trust: AuditTrust | None = None,
              expect_head: str | None = None) -> AuditCheck:
    """The first record that breaks the chain, its keys or its meaning; then the head."""
    trust = trust or AuditTrust()
    prev = GENESIS
    stored = list(records)
    holds: dict[str, _Hold] = {}
    try:
        for position, record in enumerate(stored, start=1):
            _check_link(record, position, prev)
            _check_signature(record, trust)
            _check_meaning(record, holds, trust)
            prev = record.hash
        if expect_head is not None:
            _check_head(stored, expect_head)
    except _Violation as bad:
        at = next((i for i, r in enumerate(stored) if r.seq == bad.seq), len(stored))
        head = stored[at - 1].hash if at > 0 else GENESIS
        return AuditCheck(False, len(stored), head, bad.seq, bad.reason, _notes(trust))
    return AuditCheck(True, len(stored), prev, notes=_notes(trust))


def _notes(trust: AuditTrust) -> tuple[str, ...]:
    notes = []
    if not trust.reviewers:
        notes.append("no reviewers in the policy: approvals are checked for a checker "
                     "other than the maker and expiry, not for signatures (unsigned "
                     "development mode)")
    if trust.writer_key is None:
        notes.append("no [audit] writer_key in the policy: unsigned records are accepted")
    return tuple(notes)


def _check_link(record: AuditRecord, position: int, prev: str) -> None:
    if record.computed_hash() != record.hash:
        raise _Violation(record.seq, f"record {record.seq} was altered: its hash does not "
                                     "match its content")
    if record.seq != position:
        raise _Violation(record.seq, f"record {record.seq} is at position {position}: a "
                                     "record before it was deleted or the order was changed")
    if record.prev_hash != prev:
        raise _Violation(record.seq, f"record {record.seq} does not follow record "
                                     f"{position - 1}: the chain was cut or reordered")


@functools.lru_cache(maxsize=64)
def _key(text: str) -> Ed25519PublicKey | None:
    try:
        return parse_public_key(text, "audit record signer")
    except ConfigError:
        return None


def _check_signature(record: AuditRecord, trust: AuditTrust) -> None:
    if record.signature is None:
        if trust.writer_key is not None:
            raise _Violation(record.seq, f"record {record.seq} ({record.event}) is not "
                                         "signed; the policy's [audit] writer_key requires "
                                         "every record to be")
        return
    key = _key(record.signer) if isinstance(record.signer, str) else None
    if key is None or not verify(key, record.hash.encode("ascii"), record.signature):
        raise _Violation(record.seq, f"record {record.seq} ({record.event}): its signature "
                                     "does not match it; it was rewritten (and the chain "
                                     "recomputed) by someone without the signer's key")
    if trust.writer_key is not None and not trust.trusted(record.signer):
        raise _Violation(record.seq, f"record {record.seq} ({record.event}) is signed by a "
                                     f"key the policy does not list ({record.signer})")


def _check_meaning(record: AuditRecord, holds: dict[str, _Hold], trust: AuditTrust) -> None:
    event, subject = record.event, record.subject
    if not event.startswith("hold.") or subject is None:
        return
    hold = holds.get(subject)
    if event == "hold.created":
        if hold is not None:
            raise _Violation(record.seq, f"record {record.seq}: hold {subject} was already "
                                         f"created at record {hold.created.seq}")
        holds[subject] = _Hold(record)
        return
    if hold is None:
        raise _Violation(record.seq, f"record {record.seq} ({event}) is about hold {subject}, "
                                     "which no hold.created record introduced")
    if event in ("hold.approved", "hold.rejected"):
        _check_decision(record, hold, trust)
    elif event == "hold.void":
        hold.approved = False
    elif event == "hold.executed":
        _check_execution(record, hold)


def _expires_at(hold: _Hold) -> float:
    value = hold.created.detail.get("expires_at")
    return float(value) if isinstance(value, int | float) else float("-inf")


def _check_decision(record: AuditRecord, hold: _Hold, trust: AuditTrust) -> None:
    subject = record.subject
    if hold.decision is not None:
        raise _Violation(record.seq, f"record {record.seq}: hold {subject} was already "
                                     f"decided at record {hold.decision.seq} (a hold has "
                                     "exactly one decision)")
    hold.decision = record
    if record.event == "hold.rejected":
        return
    hold.approved = True
    hold.problem = _approval_problem(record, hold, trust)


def _approval_problem(record: AuditRecord, hold: _Hold, trust: AuditTrust) -> str | None:
    maker = hold.created.actor or ""
    checker = record.actor or ""
    if not checker or same_identity(maker, checker):
        return f"it was approved by its maker ({checker!r})"
    if record.ts >= _expires_at(hold):
        return "it was approved after it expired"
    if trust.reviewers:
        return signature_problem(_statement(hold.created, checker), record.detail.get(
            "signature"), record.detail.get("signed_by"), trust.reviewers)
    return None


def _statement(created: AuditRecord, checker: str) -> dict[str, Any]:
    """The canonical approval, rebuilt from what the request's own record says."""
    detail: Mapping[str, Any] = created.detail
    # The values as recorded (a missing one stays None and fails the signature check).
    value: Any = detail.get
    request = HoldRecord(
        id=str(created.subject), tool=value("tool"), payload_hash=value("payload_hash"),
        maker=created.actor or "", risk_tier="", reason="", created_at=created.ts,
        expires_at=value("expires_at"), server=value("server"),
        action_class=value("action_class"))
    return statement(request, checker, "approved")


def _check_execution(record: AuditRecord, hold: _Hold) -> None:
    subject = record.subject
    if hold.executed is not None:
        raise _Violation(record.seq, f"record {record.seq}: hold {subject} was already "
                                     f"executed at record {hold.executed.seq}")
    hold.executed = record
    if not hold.approved or hold.decision is None:
        raise _Violation(record.seq, f"record {record.seq}: hold {subject} was executed "
                                     "without a valid approval before it")
    if hold.problem is not None:
        approval = hold.decision.seq
        raise _Violation(approval, f"record {approval}: the approval of hold {subject}, "
                                   f"executed at record {record.seq}, is not valid: "
                                   f"{hold.problem}")
    if record.ts >= _expires_at(hold):
        raise _Violation(record.seq, f"record {record.seq}: hold {subject} was executed "
                                     "after its approval expired")


def _check_head(stored: list[AuditRecord], expect_head: str) -> None:
    seq_text, _, digest = expect_head.partition(":")
    if not seq_text.isdigit() or not digest.startswith("sha256:"):
        raise ConfigError("--expect-head", f"not an anchor: {expect_head!r}",
                          "use the SEQ:sha256:HEX that spanguard audit anchor printed")
    seq = int(seq_text)
    if seq > len(stored):
        raise _Violation(len(stored) + 1,
                         f"the log ends at record {len(stored)} but the anchor pins record "
                         f"{seq}: records {len(stored) + 1}..{seq} were cut off (truncated)")
    if seq > 0 and stored[seq - 1].hash != digest:
        raise _Violation(seq, f"record {seq} is not the anchored one: the log was rewritten "
                              "from there on (or the anchor is from another log)")
