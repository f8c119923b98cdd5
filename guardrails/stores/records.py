"""The records the stores keep for holds and the audit log (plain values, JSON round-trip).

Budget counters need no record type: a counter is a key, a bucket and a number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from spanguard.hashing import canonical_json

# ``void``: an approval the executing side refused (unsigned, forged or altered).
HoldStatus = Literal["pending", "approved", "rejected", "expired", "executed", "void"]
ACTIVE: tuple[HoldStatus, ...] = ("pending", "approved")
GENESIS = "sha256:" + "0" * 64


@dataclass(frozen=True)
class HoldRecord:
    """One approval request. Times are seconds since the epoch (UTC).

    ``server`` is the MCP server the call goes to (None outside MCP); ``rule``
    names the hold rule that matched (``tools``, ``action_classes``,
    ``high_risk``, ``unverified``) and ``action_class`` the call's class, both
    for the checker and for a reviewer's scope. ``signature`` is the checker's
    Ed25519 signature of the canonical decision
    (:mod:`~spanguard.guardrails.approval_proof`), ``signed_by`` its public key.
    """

    id: str
    tool: str
    payload_hash: str
    maker: str
    risk_tier: str
    reason: str
    created_at: float
    expires_at: float
    status: HoldStatus = "pending"
    summary: str = ""
    call_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    checker: str | None = None
    decision_reason: str | None = None
    decided_at: float | None = None
    executed_at: float | None = None
    # Approval latency: the request shown to the checker -> their decision (seconds).
    review_seconds: float | None = None
    # The MCP server the call goes to (None outside MCP); part of payload_hash too.
    server: str | None = None
    action_class: str | None = None
    rule: str | None = None
    signature: str | None = None
    signed_by: str | None = None

    def expired(self, now: float) -> bool:
        return self.status in ACTIVE and now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HoldRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def may_move(record: HoldRecord, expected: HoldStatus, new: HoldStatus, now: float) -> bool:
    """The compare-and-set rule every hold backend applies (see ``HoldStore.transition``)."""
    if record.status != expected:
        return False
    return not (expected in ACTIVE and new != "expired" and now >= record.expires_at)


@dataclass(frozen=True)
class AuditRecord:
    """One audit event. ``hash`` covers the body (every field but the signature),
    ``prev_hash`` included; ``signature`` is ``signer``'s Ed25519 signature of
    ``hash``, so a signed record cannot be rewritten, nor the chain recomputed
    behind it, without that key."""

    seq: int
    ts: float
    event: str
    actor: str | None
    subject: str | None
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str = ""
    signer: str | None = None
    signature: str | None = None

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "event": self.event, "actor": self.actor,
                "subject": self.subject, "detail": dict(self.detail),
                "prev_hash": self.prev_hash}

    def computed_hash(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_json(self.body()).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        data = {**self.body(), "hash": self.hash}
        if self.signature is not None:
            data["signer"] = self.signer
            data["signature"] = self.signature
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditRecord:
        return cls(seq=int(data["seq"]), ts=float(data["ts"]), event=str(data["event"]),
                   actor=data.get("actor"), subject=data.get("subject"),
                   detail=dict(data.get("detail") or {}), prev_hash=str(data["prev_hash"]),
                   hash=str(data.get("hash", "")), signer=data.get("signer"),
                   signature=data.get("signature"))
