"""The signed approval: what a reviewer's signature covers, and how it is checked.

A reviewer signs one canonical statement (sorted-key JSON, no spaces)::

    {"format": "spanguard.approval/1", "hold_id": ..., "payload_hash": ...,
     "server": ..., "tool": ..., "action_class": ..., "maker": ..., "checker": ...,
     "expires_at": ..., "decision": "approved" | "rejected"}

so a signature is bound to one request (its id), one exact payload on one
server, one maker and one checker, one decision, and stops counting at the
request's expiry. A store row that claims ``approved`` proves nothing by itself:
:func:`approval_problem` re-derives the statement from the row and checks the
signature against the *policy's* keys before anything runs. A row written by
hand, a signature copied from another request, an altered payload hash, checker
or expiry: each makes the statement differ from what was signed.
"""

from __future__ import annotations

from typing import Any

from spanguard.guardrails.identity import same_identity
from spanguard.guardrails.reviewers import Reviewers
from spanguard.guardrails.signing import Signer, verify
from spanguard.guardrails.stores.records import HoldRecord
from spanguard.hashing import canonical_json

FORMAT = "spanguard.approval/1"


def statement(hold: HoldRecord, checker: str, decision: str) -> dict[str, Any]:
    """The canonical decision about ``hold`` (what is signed, and audited)."""
    return {"format": FORMAT, "hold_id": hold.id, "payload_hash": hold.payload_hash,
            "server": hold.server, "tool": hold.tool, "action_class": hold.action_class,
            "maker": hold.maker, "checker": checker, "expires_at": hold.expires_at,
            "decision": decision}


def statement_bytes(fields: dict[str, Any]) -> bytes:
    return canonical_json(fields).encode("utf-8")


def sign(hold: HoldRecord, checker: str, decision: str, signer: Signer) -> str:
    return signer.sign(statement_bytes(statement(hold, checker, decision)))


def signature_problem(fields: dict[str, Any], signature: object, signed_by: object,
                      reviewers: Reviewers) -> str | None:
    """Why a signed statement is not a valid decision under ``reviewers``, or None.

    Checks the key is the policy's, the signature covers exactly ``fields``, the
    key's reviewer is the checker named, differs from the maker, and may decide
    this tool, class and server. Expiry is the caller's (it needs the clock).
    """
    if signature is None or signed_by is None:
        return ("the approval is not signed; this policy lists reviewers, so only an "
                "approval signed with a reviewer key counts (unsigned approvals are for "
                "development)")
    reviewer = reviewers.by_key(signed_by if isinstance(signed_by, str) else None)
    if reviewer is None:
        return f"the approval is signed by a key the policy does not list ({signed_by})"
    if not verify(reviewer.public_key, statement_bytes(fields), signature):
        return ("the signature does not match the approval: the hold id, payload hash, "
                "server, tool, maker, checker, expiry or decision was altered, or the "
                "signature belongs to another request")
    checker = fields.get("checker")
    if not isinstance(checker, str) or not same_identity(checker, reviewer.name):
        return (f"the checker named ({checker!r}) is not the reviewer whose key signed "
                f"({reviewer.name!r})")
    maker = fields.get("maker")
    if isinstance(maker, str) and same_identity(maker, reviewer.name):
        return f"the reviewer {reviewer.name!r} is the maker of the call"
    if not reviewer.may_approve(str(fields.get("tool")), fields.get("action_class"),
                                fields.get("server")):
        return (f"reviewer {reviewer.name!r} may not decide {fields.get('tool')} "
                f"(allowed: {reviewer.scope})")
    return None


def approval_problem(hold: HoldRecord, reviewers: Reviewers, now: float) -> str | None:
    """Why the approved ``hold`` must not run, or None when its approval is proven.

    Without reviewers (unsigned development mode) only what the row itself can
    show is checked: a checker, different from the maker.
    """
    if hold.checker is None:
        return "the approval names no checker"
    if same_identity(hold.maker, hold.checker):
        return f"the checker {hold.checker!r} is the maker of the call"
    if now >= hold.expires_at:
        return "the approval expired before the call was made"
    if not reviewers:
        return None
    return signature_problem(statement(hold, hold.checker, "approved"), hold.signature,
                             hold.signed_by, reviewers)
