"""The checker's side of maker-checker: approve, reject, list, wait.

Every rule that makes an approval worth having is enforced here, against the
store, not in the CLI or the adapters: the checker must differ from the maker;
an approval is bound to the payload hash it was requested for; it is consumed by
exactly one execution; it is void after expiry. Each state change is a
compare-and-set in the store, so racing approve/reject (or two executions of one
approval) have exactly one winner, and each is appended to the audit log.

Module-level functions (:func:`approve`, :func:`reject`, :func:`list_holds`,
:func:`get_hold`, :func:`wait_for_decision`) use the default store
(``SPANGUARD_STORE_URL`` or SQLite under ``SPANGUARD_HOME``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from spanguard.errors import SpanguardError
from spanguard.guardrails.audit import AuditLog
from spanguard.guardrails.stores import HoldStore, Store, open_store
from spanguard.guardrails.stores.records import HoldRecord, HoldStatus

Clock = Callable[[], float]


class ApprovalError(SpanguardError):
    """An approve/reject/execute was refused; the hold is unchanged."""


class HoldNotFound(ApprovalError, LookupError):
    def __init__(self, hold_id: str) -> None:
        self.hold_id = hold_id
        super().__init__(f"no hold {hold_id!r} (run `spanguard holds list` to see them)")


class MakerCheckerViolation(ApprovalError):
    """The maker tried to approve (or reject) their own request."""

    def __init__(self, hold: HoldRecord, identity: str) -> None:
        self.hold = hold
        super().__init__(
            f"{identity!r} made hold {hold.id} and cannot also decide it; "
            "a different identity must approve or reject it (--as NAME)")


class HoldExpired(ApprovalError):
    def __init__(self, hold: HoldRecord) -> None:
        self.hold = hold
        super().__init__(f"hold {hold.id} expired before it was decided; the call was not "
                         "executed and must be made again to request a new approval")


class HoldConflict(ApprovalError):
    """The hold is no longer pending (already decided, used, or a racing decision won)."""

    def __init__(self, hold: HoldRecord) -> None:
        self.hold = hold
        who = f" by {hold.checker}" if hold.checker else ""
        super().__init__(f"hold {hold.id} is already {hold.status}{who}; nothing changed")


def same_identity(a: str, b: str) -> bool:
    """Identities compare without case or surrounding space: "Alice " is alice."""
    return a.strip().casefold() == b.strip().casefold()


def _checked_identity(identity: str) -> str:
    if not identity or not identity.strip():
        raise ApprovalError("an approval or rejection needs a checker identity (--as NAME)")
    return identity.strip()


class Approvals:
    """Hold lifecycle over one store and one audit log (both injectable, and the clock)."""

    def __init__(self, store: HoldStore, audit: AuditLog, clock: Clock = time.time) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock

    @classmethod
    def over(cls, store: Store, clock: Clock = time.time) -> Approvals:
        """The holds and audit log of one store (one connection for both)."""
        return cls(store.holds, AuditLog(store.audit, clock), clock)

    @classmethod
    def open(cls, store_url: str | None = None, clock: Clock = time.time) -> Approvals:
        """Over :func:`~spanguard.guardrails.stores.open_store` ``(store_url)``."""
        return cls.over(open_store(store_url), clock)

    # --- maker side (used by the hold guard) ---------------------------------
    def request(self, *, tool: str, payload_hash: str, maker: str, risk_tier: str,
                reason: str, expires_after: float, summary: str = "",
                call_id: str | None = None, trace_id: str | None = None,
                span_id: str | None = None, server: str | None = None) -> HoldRecord:
        now = self.clock()
        record = HoldRecord(
            id="hold_" + secrets.token_hex(6), tool=tool, payload_hash=payload_hash,
            maker=maker, risk_tier=risk_tier, reason=reason, created_at=now,
            expires_at=now + expires_after, summary=summary, call_id=call_id,
            trace_id=trace_id, span_id=span_id, server=server)
        self.store.create(record)
        self.audit.append("hold.created", actor=maker, subject=record.id, tool=tool,
                          payload_hash=payload_hash, risk_tier=risk_tier, reason=reason,
                          expires_at=record.expires_at, trace_id=trace_id, span_id=span_id,
                          server=server)
        return record

    def consume(self, hold: HoldRecord, payload_hash: str) -> HoldRecord | None:
        """Mark an approved hold executed; None if it is not usable for this payload.

        The payload check is repeated here (not only in the lookup) so that no
        caller can spend an approval on a different payload.
        """
        if hold.payload_hash != payload_hash:
            return None
        now = self.clock()
        used = self.store.transition(hold.id, "approved", "executed", now, executed_at=now)
        if used is not None:
            self.audit.append("hold.executed", actor=used.maker, subject=used.id,
                              tool=used.tool, payload_hash=payload_hash,
                              checker=used.checker, trace_id=used.trace_id)
        return used

    def expire(self, hold: HoldRecord) -> HoldRecord:
        """Move an active hold past its expiry to ``expired`` (idempotent)."""
        moved = self.store.transition(hold.id, hold.status, "expired", self.clock())
        if moved is None:
            return self.store.get(hold.id) or hold
        self.audit.append("hold.expired", actor=None, subject=hold.id, tool=hold.tool,
                          previous_status=hold.status)
        return moved

    # --- checker side ------------------------------------------------------------
    def approve(self, hold_id: str, as_identity: str, reason: str | None = None) -> HoldRecord:
        return self._decide(hold_id, as_identity, reason, "approved")

    def reject(self, hold_id: str, as_identity: str, reason: str | None = None) -> HoldRecord:
        return self._decide(hold_id, as_identity, reason, "rejected")

    def _decide(self, hold_id: str, identity: str, reason: str | None,
                outcome: HoldStatus) -> HoldRecord:
        checker = _checked_identity(identity)
        hold = self.get(hold_id)
        if same_identity(hold.maker, checker):
            raise MakerCheckerViolation(hold, checker)
        if hold.status == "expired":
            raise HoldExpired(hold)
        if hold.status != "pending":
            raise HoldConflict(hold)
        now = self.clock()
        decided = self.store.transition(hold.id, "pending", outcome, now, checker=checker,
                                        decision_reason=reason, decided_at=now)
        if decided is None:
            current = self.get(hold_id)
            if current.status == "expired":
                raise HoldExpired(current)
            raise HoldConflict(current)
        self.audit.append(f"hold.{outcome}", actor=checker, subject=hold.id, tool=hold.tool,
                          payload_hash=hold.payload_hash, maker=hold.maker, reason=reason)
        return decided

    def get(self, hold_id: str) -> HoldRecord:
        """The hold, with a lapsed expiry applied first (so status is never stale)."""
        hold = self.store.get(hold_id)
        if hold is None:
            raise HoldNotFound(hold_id)
        if hold.expired(self.clock()):
            hold = self.expire(hold)
        return hold

    def list(self, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]:
        now = self.clock()
        holds = [self.expire(h) if h.expired(now) else h for h in self.store.list(None, limit)]
        return [h for h in holds if status is None or h.status == status]

    def wait_for_decision(self, hold_id: str, timeout: float,
                          poll_interval: float = 0.25,
                          sleep: Callable[[float], None] = time.sleep) -> HoldRecord:
        """Block until the hold leaves ``pending`` or ``timeout`` seconds pass.

        For ``--hold-wait``: the caller then re-makes the call (an approval is
        consumed at execution, not here) or reports the still-pending hold.
        """
        deadline = time.monotonic() + timeout
        while True:
            hold = self.get(hold_id)
            if hold.status != "pending" or time.monotonic() >= deadline:
                return hold
            sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))


def _default(store_url: str | None) -> Approvals:
    return Approvals.open(store_url)


def approve(hold_id: str, as_identity: str, reason: str | None = None, *,
            store_url: str | None = None) -> HoldRecord:
    """Approve a pending hold as a checker who is not its maker."""
    return _default(store_url).approve(hold_id, as_identity, reason)


def reject(hold_id: str, as_identity: str, reason: str | None = None, *,
           store_url: str | None = None) -> HoldRecord:
    """Reject a pending hold; the held call will never execute."""
    return _default(store_url).reject(hold_id, as_identity, reason)


def list_holds(status: HoldStatus | None = None, *, store_url: str | None = None,
               limit: int = 100) -> list[HoldRecord]:
    return _default(store_url).list(status, limit)


def get_hold(hold_id: str, *, store_url: str | None = None) -> HoldRecord:
    return _default(store_url).get(hold_id)


def wait_for_decision(hold_id: str, timeout: float, *, store_url: str | None = None,
                      **kwargs: Any) -> HoldRecord:
    return _default(store_url).wait_for_decision(hold_id, timeout, **kwargs)

