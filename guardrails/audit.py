"""The tamper-evident audit log: every governance event, hash-chained.

Each record carries the hash of the one before it and its own hash over its
content (sha256 of canonical JSON), so editing a record breaks its own hash,
deleting one leaves a gap in the sequence and a dangling ``prev_hash``, and
swapping two breaks both links. :meth:`AuditLog.verify` walks the chain and names
the first broken record. A chain cannot prove its own tail was not cut off:
anchor :attr:`AuditCheck.head` somewhere else (a ticket, a log shipper) when
that matters.

Records hold ids, hashes and identities of makers and checkers (that is the
point of an audit), never tool arguments. The chain is kept by the ``audit``
facet of the one store layer (:mod:`spanguard.guardrails.stores`): the ``audit``
table beside the holds and budget counters in SQLite (the default), a Redis
list, or memory; the same URL rules as every store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from spanguard.errors import ConfigError, StoreError
from spanguard.guardrails.audit_keys import AuditKeys
from spanguard.guardrails.signing import Signer
from spanguard.guardrails.steps import Decision, RunState
from spanguard.guardrails.stores import AuditBackend, MemoryAudit, Store, open_store
from spanguard.guardrails.stores.records import GENESIS, AuditRecord
from spanguard.hashing import canonical_json

logger = logging.getLogger("spanguard")

MemoryAuditBackend = MemoryAudit  # the 0.1 name

__all__ = [
    "GENESIS",
    "SELF_AUDITING_GUARDS",
    "AuditCheck",
    "AuditLog",
    "AuditRecord",
    "EnforcerAuditSink",
    "MemoryAuditBackend",
    "check_chain",
    "open_audit_log",
]

# Guards whose modules append their own, more detailed, audit records (the hold
# guard: request id, maker, checker; the verify guard: the verification status).
SELF_AUDITING_GUARDS = frozenset({"holds", "verify"})


@dataclass(frozen=True)
class AuditCheck:
    """The result of :meth:`AuditLog.verify`; ``broken_seq`` is the first bad record."""

    ok: bool
    records: int
    head: str
    broken_seq: int | None = None
    reason: str = ""
    notes: tuple[str, ...] = ()

    @property
    def anchor(self) -> str:
        """``SEQ:HASH`` of the last record: pin it elsewhere, check it with
        ``spanguard audit verify --expect-head``."""
        return f"{self.records}:{self.head}"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "head": self.head,
                "anchor": self.anchor, "broken_seq": self.broken_seq,
                "reason": self.reason, "notes": list(self.notes)}


def check_chain(records: Iterable[AuditRecord]) -> AuditCheck:
    """Walk records in stored order; the first one that does not fit is named."""
    prev = GENESIS
    count = 0
    for expected_seq, record in enumerate(records, start=1):
        count = expected_seq
        if record.computed_hash() != record.hash:
            return AuditCheck(False, count, prev, record.seq,
                              f"record {record.seq} was altered: its hash does not match "
                              "its content")
        if record.seq != expected_seq:
            return AuditCheck(False, count, prev, record.seq,
                              f"record {record.seq} is at position {expected_seq}: a record "
                              "before it was deleted or the order was changed")
        if record.prev_hash != prev:
            return AuditCheck(False, count, prev, record.seq,
                              f"record {record.seq} does not follow record "
                              f"{expected_seq - 1}: the chain was cut or reordered")
        prev = record.hash
    return AuditCheck(True, count, prev)


class AuditLog:
    """Append-only, hash-chained. Appends are atomic per backend (one chain, no forks).

    With a ``signer`` every record this log appends carries its signature of the
    record's hash.
    """

    def __init__(self, backend: AuditBackend, clock: Callable[[], float] = time.time,
                 signer: Signer | None = None) -> None:
        self._backend = backend
        self._clock = clock
        self.signer = signer

    def append(self, event: str, *, actor: str | None = None, subject: str | None = None,
               **detail: Any) -> AuditRecord:
        """Add one record; ``detail`` must be JSON-serialisable plain values."""
        now = self._clock()
        clean = json.loads(canonical_json(detail))

        signer = self.signer

        def make(seq: int, prev_hash: str) -> AuditRecord:
            digest = AuditRecord(seq, now, event, actor, subject, clean,
                                 prev_hash).computed_hash()
            if signer is None:
                return AuditRecord(seq, now, event, actor, subject, clean, prev_hash, digest)
            return AuditRecord(seq, now, event, actor, subject, clean, prev_hash, digest,
                               signer.public, signer.sign(digest.encode("ascii")))

        return self._backend.append(make)

    def records(self) -> list[AuditRecord]:
        """Every record in stored order (by sequence number)."""
        return self._backend.records()

    def verify(self) -> AuditCheck:
        """The chain alone (see :func:`~spanguard.guardrails.audit_check.check_log`
        for signatures, meaning and the anchored head)."""
        return check_chain(self.records())


def open_audit_log(store_url: str | None = None,
                   clock: Callable[[], float] = time.time,
                   signer: Signer | None = None) -> AuditLog:
    """The audit log of :func:`~spanguard.guardrails.stores.open_store` ``(store_url)``."""
    return AuditLog(open_store(store_url).audit, clock, signer)


@dataclass
class EnforcerAuditSink:
    """Audits the enforcer's refusals (budget denials and the like).

    Hold and verification decisions are skipped here: their guards write richer
    records themselves (request id, maker, checker). A failing audit write is
    logged, never raised: the refusal itself has already happened (fail closed).
    The log is the policy's store (``store``, else ``store_url`` through
    :func:`~spanguard.guardrails.stores.open_store`), opened at the first refusal,
    signed with the policy's audit writer key when ``keys`` names one.
    """

    store_url: str | None = None
    store: Store | None = None
    keys: AuditKeys | None = None
    _log: AuditLog | None = field(default=None, init=False, repr=False)

    def __call__(self, decision: Decision, run: RunState, subject: str | None) -> None:
        if decision.kind != "deny" or decision.guard in SELF_AUDITING_GUARDS:
            return
        try:
            if self._log is None:
                store = self.store if self.store is not None else open_store(self.store_url)
                signer = self.keys.signer() if self.keys is not None else None
                self._log = AuditLog(store.audit, signer=signer)
            self._log.append(f"{decision.guard}.refused", actor=run.identity, subject=subject,
                             reason=decision.reason, trace_id=run.trace_id,
                             error_type=getattr(decision.error, "error_type", None))
        except (StoreError, ConfigError) as exc:
            logger.warning("spanguard: could not audit a %s refusal: %s", decision.guard, exc)
