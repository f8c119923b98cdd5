"""The checker's side of maker-checker: approve, reject, list, wait.

Every rule that makes an approval worth having is enforced here, against the
store, not in the CLI or the adapters: the checker must differ from the maker
(compared as people read names: :mod:`~spanguard.guardrails.identity`); an
approval is bound to the payload hash it was requested for; it is consumed by
exactly one execution; it is void after expiry. Each state change is a
compare-and-set in the store, so racing approve/reject (or two executions of one
approval) have exactly one winner, and each is appended to the audit log.

Given the policy's ``reviewers``, a decision must be signed (``signer=``) with
the key of a listed reviewer allowed for the call; the checker is that key's
reviewer (the identity is the key, not the typed name). The executing side
checks the signature again before it runs anything
(:func:`~spanguard.guardrails.approval_proof.approval_problem`), since a row in
the store proves nothing by itself.

Module-level functions (:func:`approve`, :func:`reject`, :func:`list_holds`,
:func:`get_hold`, :func:`wait_for_decision`) use the default store
(``SPANGUARD_STORE_URL`` or SQLite under ``SPANGUARD_HOME``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from spanguard.errors import SpanguardError
from spanguard.guardrails import approval_proof
from spanguard.guardrails.audit import AuditLog
from spanguard.guardrails.identity import identity_problem, same_identity
from spanguard.guardrails.reviewers import Reviewer, Reviewers
from spanguard.guardrails.signing import Signer
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


class InvalidIdentity(ApprovalError):
    """A name that cannot be an identity: empty, or with invisible/control characters."""

    def __init__(self, identity: object, problem: str) -> None:
        self.identity = identity
        super().__init__(f"the identity {identity!r} {problem}")


class UnsignedApproval(ApprovalError):
    """The policy lists reviewers, and the decision was not signed with a reviewer key."""

    def __init__(self, hold: HoldRecord) -> None:
        self.hold = hold
        super().__init__(
            f"hold {hold.id}: this policy lists reviewers, so a decision must be signed "
            "with a reviewer key (create one with `spanguard reviewer init --as NAME`, add "
            "its public key to [holds.reviewers], then approve with --as NAME or --key FILE)")


class ReviewerNotAllowed(ApprovalError):
    """The signing key is not a listed reviewer, or not one allowed for this call."""

    def __init__(self, hold: HoldRecord, why: str) -> None:
        self.hold = hold
        super().__init__(f"hold {hold.id} ({hold.tool}): {why}")


def _checked_identity(identity: str) -> str:
    if not isinstance(identity, str) or not identity.strip():
        raise ApprovalError("an approval or rejection needs a checker identity (--as NAME)")
    problem = identity_problem(identity)
    if problem is not None:
        raise InvalidIdentity(identity, problem)
    return identity.strip()


def _reviewer_for(hold: HoldRecord, checker: str, signer: Signer | None,
                  reviewers: Reviewers) -> Reviewer:
    """The listed reviewer who signs this decision (the key decides, not the name)."""
    if signer is None:
        raise UnsignedApproval(hold)
    reviewer = reviewers.by_key(signer.public)
    if reviewer is None:
        raise ReviewerNotAllowed(hold, f"the key {signer.public} is not a reviewer key of "
                                       "this policy ([holds.reviewers])")
    if not same_identity(reviewer.name, checker):
        raise ReviewerNotAllowed(hold, f"the key belongs to reviewer {reviewer.name!r}, "
                                       f"not to {checker!r}")
    if not reviewer.may_approve_hold(hold):
        raise ReviewerNotAllowed(hold, f"reviewer {reviewer.name!r} may not decide this call "
                                       f"(allowed: {reviewer.scope})")
    return reviewer


class Approvals:
    """Hold lifecycle over one store and one audit log (both injectable, and the clock).

    ``persist_expiry=False`` makes a read-only view (the CLI's ``list``/``show``):
    a lapsed hold is shown expired without writing the transition or its audit
    record, which the reader may have no key to sign.
    """

    def __init__(self, store: HoldStore, audit: AuditLog, clock: Clock = time.time, *,
                 persist_expiry: bool = True) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self.persist_expiry = persist_expiry

    @classmethod
    def over(cls, store: Store, clock: Clock = time.time, *, signer: Signer | None = None,
             persist_expiry: bool = True) -> Approvals:
        """The holds and audit log of one store (one connection for both); ``signer``
        signs the audit records appended here."""
        return cls(store.holds, AuditLog(store.audit, clock, signer), clock,
                   persist_expiry=persist_expiry)

    @classmethod
    def open(cls, store_url: str | None = None, clock: Clock = time.time, *,
             signer: Signer | None = None) -> Approvals:
        """Over :func:`~spanguard.guardrails.stores.open_store` ``(store_url)``."""
        return cls.over(open_store(store_url), clock, signer=signer)

    # --- maker side (used by the hold guard) ---------------------------------
    def request(self, *, tool: str, payload_hash: str, maker: str, risk_tier: str,
                reason: str, expires_after: float, summary: str = "",
                call_id: str | None = None, trace_id: str | None = None,
                span_id: str | None = None, server: str | None = None,
                action_class: str | None = None, rule: str | None = None) -> HoldRecord:
        now = self.clock()
        record = HoldRecord(
            id="hold_" + secrets.token_hex(6), tool=tool, payload_hash=payload_hash,
            maker=maker, risk_tier=risk_tier, reason=reason, created_at=now,
            expires_at=now + expires_after, summary=summary, call_id=call_id,
            trace_id=trace_id, span_id=span_id, server=server, action_class=action_class,
            rule=rule)
        self.store.create(record)
        self.audit.append("hold.created", actor=maker, subject=record.id, tool=tool,
                          payload_hash=payload_hash, risk_tier=risk_tier, reason=reason,
                          expires_at=record.expires_at, trace_id=trace_id, span_id=span_id,
                          server=server, action_class=action_class, rule=rule)
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
                              checker=used.checker, signed_by=used.signed_by,
                              trace_id=used.trace_id)
        return used

    def void(self, hold: HoldRecord, why: str) -> HoldRecord:
        """Refuse an approved hold whose approval does not hold up (``approved -> void``).

        The call does not run; the refusal is audited with its reason, and a
        caller that makes the call again gets a new request.
        """
        moved = self.store.transition(hold.id, "approved", "void", self.clock(),
                                      decision_reason=why)
        if moved is None:
            return self.store.get(hold.id) or hold
        self.audit.append("hold.void", actor=None, subject=hold.id, tool=hold.tool,
                          payload_hash=hold.payload_hash, checker=hold.checker,
                          signed_by=hold.signed_by, reason=why)
        return moved

    def expire(self, hold: HoldRecord) -> HoldRecord:
        """Move an active hold past its expiry to ``expired`` (idempotent)."""
        if not self.persist_expiry:
            return replace(hold, status="expired")
        moved = self.store.transition(hold.id, hold.status, "expired", self.clock())
        if moved is None:
            return self.store.get(hold.id) or hold
        self.audit.append("hold.expired", actor=None, subject=hold.id, tool=hold.tool,
                          previous_status=hold.status)
        return moved

    # --- checker side ------------------------------------------------------------
    def approve(self, hold_id: str, as_identity: str, reason: str | None = None, *,
                shown_at: float | None = None, signer: Signer | None = None,
                reviewers: Reviewers | None = None) -> HoldRecord:
        """Approve as ``as_identity``; signed with ``signer`` when given, and it must be
        (by a listed reviewer allowed for the call) when ``reviewers`` lists any.
        ``shown_at``: when the request was shown to the checker (default: its creation),
        for the approval latency (:mod:`spanguard.guardrails.review`)."""
        return self._decide(hold_id, as_identity, reason, "approved", signer, reviewers,
                            shown_at)

    def reject(self, hold_id: str, as_identity: str, reason: str | None = None, *,
               shown_at: float | None = None, signer: Signer | None = None,
               reviewers: Reviewers | None = None) -> HoldRecord:
        return self._decide(hold_id, as_identity, reason, "rejected", signer, reviewers,
                            shown_at)

    def _decide(self, hold_id: str, identity: str, reason: str | None, outcome: HoldStatus,
                signer: Signer | None, reviewers: Reviewers | None,
                shown_at: float | None = None) -> HoldRecord:
        checker = _checked_identity(identity)
        hold = self.get(hold_id)
        if same_identity(hold.maker, checker):
            raise MakerCheckerViolation(hold, checker)
        if reviewers:
            checker = _reviewer_for(hold, checker, signer, reviewers).name
            if same_identity(hold.maker, checker):
                raise MakerCheckerViolation(hold, checker)
        if hold.status == "expired":
            raise HoldExpired(hold)
        if hold.status != "pending":
            raise HoldConflict(hold)
        signed: dict[str, str | None] = {"signature": None, "signed_by": None}
        if signer is not None:
            signed = {"signature": approval_proof.sign(hold, checker, outcome, signer),
                      "signed_by": signer.public}
        now = self.clock()
        review = max(0.0, now - (hold.created_at if shown_at is None else shown_at))
        decided = self.store.transition(hold.id, "pending", outcome, now, checker=checker,
                                        decision_reason=reason, decided_at=now,
                                        review_seconds=review, **signed)
        if decided is None:
            current = self.get(hold_id)
            if current.status == "expired":
                raise HoldExpired(current)
            raise HoldConflict(current)
        self.audit.append(f"hold.{outcome}", actor=checker, subject=hold.id, tool=hold.tool,
                          payload_hash=hold.payload_hash, maker=hold.maker, reason=reason,
                          server=hold.server, expires_at=hold.expires_at,
                          review_seconds=review, **signed)
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


def _view(store_url: str | None) -> Approvals:
    """A read-only view of the store: a lapsed hold reads as expired, and the
    transition (an audit record to sign) is left to the guard or a decision."""
    return Approvals.over(open_store(store_url), persist_expiry=False)


def approve(hold_id: str, as_identity: str, reason: str | None = None, *,
            store_url: str | None = None, shown_at: float | None = None,
            signer: Signer | None = None, reviewers: Reviewers | None = None) -> HoldRecord:
    """Approve a pending hold as a checker who is not its maker (signed with ``signer``)."""
    return Approvals.open(store_url, signer=signer).approve(
        hold_id, as_identity, reason, shown_at=shown_at, signer=signer, reviewers=reviewers)


def reject(hold_id: str, as_identity: str, reason: str | None = None, *,
           store_url: str | None = None, shown_at: float | None = None,
           signer: Signer | None = None, reviewers: Reviewers | None = None) -> HoldRecord:
    """Reject a pending hold; the held call will never execute."""
    return Approvals.open(store_url, signer=signer).reject(
        hold_id, as_identity, reason, shown_at=shown_at, signer=signer, reviewers=reviewers)


def list_holds(status: HoldStatus | None = None, *, store_url: str | None = None,
               limit: int = 100) -> list[HoldRecord]:
    return _view(store_url).list(status, limit)


def get_hold(hold_id: str, *, store_url: str | None = None) -> HoldRecord:
    return _view(store_url).get(hold_id)


def wait_for_decision(hold_id: str, timeout: float, *, store_url: str | None = None,
                      **kwargs: Any) -> HoldRecord:
    """Poll (read-only) until the hold is decided or ``timeout`` seconds pass."""
    return _view(store_url).wait_for_decision(hold_id, timeout, **kwargs)

