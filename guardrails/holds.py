"""Maker-checker holds: a matched tool call is not executed until someone else approves it.

A hold rule matches a call by tool name or glob (``tools = ["payments_*"]``), by
action class (``action_classes = ["destructive"]``), or, with ``high_risk =
true``, by MCP tool annotations: ``destructiveHint`` true, or neither
``readOnlyHint`` nor ``idempotentHint``. The guard stores an approval request
(:mod:`~spanguard.guardrails.approvals`) and answers ``Decision(kind="hold")``
carrying a :class:`HoldPending`; the adapter renders it in its idiom (LangGraph
``interrupt()``, an MCP ``isError`` result), saying which rule matched. When the
same maker makes the same call again (same tool, same canonical payload hash)
after approval, the guard checks the approval (signed by a listed reviewer when
the policy lists any: :func:`~spanguard.guardrails.approval_proof.approval_problem`),
consumes it and allows the call once; an approval that does not hold up is
voided and the call refused. A call to an MCP server (``ToolCall.server`` set)
is bound to that server: the server is part of the payload hash, the record and
the summary the checker reads, so an approval given for one server never
releases the same call on another.

``ToolCall.annotations``: ``None`` means "no hints known" (the call is not
classified); an MCP adapter passes the tool's annotations, or ``{}`` when the
server gave none, which by the rule above makes the tool high risk. A policy
marks tools or servers it knows to be read-only with ``read_only`` and
``read_only_servers`` (globs); the default stays safe.
"""

from __future__ import annotations

import fnmatch
import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from spanguard import semconv as sc
from spanguard.errors import ConfigError
from spanguard.guardrails import _parse
from spanguard.guardrails.approval_proof import approval_problem
from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.audit_keys import AuditKeys
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.gating import gate_for
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.identity import identity_problem, same_identity
from spanguard.guardrails.review import ReviewBelowFloor, ReviewRules
from spanguard.guardrails.reviewers import Reviewers, parse_reviewers
from spanguard.guardrails.steps import Decision, RunState, ToolCall
from spanguard.guardrails.stores import Store, open_store
from spanguard.guardrails.stores.records import ACTIVE, HoldRecord
from spanguard.hashing import canonical_json, payload_hash

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy

GUARD_NAME = "holds"
HIGH_RISK_CLASSES = frozenset({"destructive", "non_idempotent_mutation"})
ACTION_CLASSES = frozenset({"read_only", "idempotent_mutation", *HIGH_RISK_CLASSES})
_ARGUMENT_PREVIEW = 400
_TABLE_KEYS = ("high_risk", "tools", "action_classes", "classes", "read_only",
               "read_only_servers", "expires_after", "risk_tier", "show_arguments",
               "reviewers")


def parse_duration(value: object, source: str) -> float:
    """``"1h"``, ``"30m"``, ``"45s"``, ``"2d"`` or a number of seconds, > 0."""
    return _parse.duration(value, "duration", source)


def _hint(annotations: Mapping[str, Any], camel: str, snake: str) -> bool:
    return bool(annotations.get(camel, annotations.get(snake)))


def annotation_class(annotations: Mapping[str, Any] | None) -> str | None:
    """The action class MCP hints imply, or None when there are no hints at all."""
    return _annotation_class(annotations)[0]


def _annotation_class(annotations: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """The class and, in words, the hint it comes from."""
    if annotations is None:
        return None, "no hints known"
    if _hint(annotations, "destructiveHint", "destructive_hint"):
        return "destructive", "the server declares destructiveHint"
    if _hint(annotations, "readOnlyHint", "read_only_hint"):
        return "read_only", "the server declares readOnlyHint"
    if _hint(annotations, "idempotentHint", "idempotent_hint"):
        return "idempotent_mutation", "the server declares idempotentHint"
    return "non_idempotent_mutation", ("the server declares neither readOnlyHint nor "
                                       "idempotentHint")


@dataclass(frozen=True, slots=True)
class HoldMatch:
    """Why a call is held: the rule (``tools``, ``action_classes``, ``high_risk``,
    ``unverified``), the call's action class, and the reason in words."""

    rule: str
    reason: str
    action_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "reason": self.reason, "action_class": self.action_class}


@dataclass(frozen=True)
class HoldRules:
    """What to hold, and who may approve it.

    ``classes`` declares a tool's action class where hints are missing;
    ``read_only`` / ``read_only_servers`` (globs over tool names / MCP server
    names) declare tools read-only, so ``high_risk`` does not hold them (``tools``
    still does: an explicit hold wins). ``reviewers``: who may approve what, with
    which key; when any are listed, only signed approvals count.
    """

    tools: tuple[str, ...] = ()
    high_risk: bool = False
    action_classes: frozenset[str] = frozenset()
    classes: Mapping[str, str] = field(default_factory=dict)
    expires_after: float = 3600.0
    risk_tier: str = "high"
    show_arguments: bool = True
    read_only: tuple[str, ...] = ()
    read_only_servers: tuple[str, ...] = ()
    reviewers: Reviewers = field(default_factory=Reviewers)

    def __post_init__(self) -> None:
        source = "HoldRules"
        object.__setattr__(self, "tools", _parse.strings(self.tools, "tools", source))
        _parse.flag(self.high_risk, "high_risk", source)
        object.__setattr__(self, "action_classes", frozenset(
            _parse.strings(self.action_classes, "action_classes", source)))
        _parse.string_table(self.classes, "classes", source)
        object.__setattr__(self, "read_only", _parse.strings(self.read_only, "read_only",
                                                             source))
        object.__setattr__(self, "read_only_servers", _parse.strings(
            self.read_only_servers, "read_only_servers", source))
        if not isinstance(self.reviewers, Reviewers):
            raise ConfigError(source, "reviewers must be a Reviewers collection",
                              "Reviewers([Reviewer(name, key), ...])")
        reviewer_classes = {c for r in self.reviewers.all for c in r.action_classes}
        unknown = (set(self.action_classes) | set(self.classes.values())
                   | reviewer_classes) - ACTION_CLASSES
        if unknown:
            raise ConfigError(source, f"action_classes: unknown action class(es) "
                                      f"{sorted(unknown)}",
                              f"known: {', '.join(sorted(ACTION_CLASSES))}")
        _parse.positive(self.expires_after, "expires_after", source, integer=False)
        _parse.text(self.risk_tier, "risk_tier", source)
        _parse.flag(self.show_arguments, "show_arguments", source)

    def action_class(self, call: ToolCall) -> str | None:
        return self.classify(call)[0]

    def classify(self, call: ToolCall) -> tuple[str | None, str]:
        """The call's action class and where it comes from (the policy first)."""
        declared = self.classes.get(call.tool)
        if declared is not None:
            return declared, f"[holds] classes declares {call.tool} {declared}"
        for pattern in self.read_only:
            if fnmatch.fnmatchcase(call.tool, pattern):
                return "read_only", f"[holds] read_only pattern {pattern!r}"
        if call.server is not None:
            for pattern in self.read_only_servers:
                if fnmatch.fnmatchcase(call.server, pattern):
                    return "read_only", f"[holds] read_only_servers pattern {pattern!r}"
        return _annotation_class(call.annotations)

    def match(self, call: ToolCall) -> str | None:
        """Why this call is held, in words, or None."""
        found = self.matched(call)
        return found.reason if found is not None else None

    def matched(self, call: ToolCall) -> HoldMatch | None:
        """The rule that holds this call, or None."""
        action, source = self.classify(call)
        for pattern in self.tools:
            if fnmatch.fnmatchcase(call.tool, pattern):
                return HoldMatch("tools", f"[holds] tools pattern {pattern!r} matches "
                                          f"{call.tool}", action)
        if action is None:
            return None
        if action in self.action_classes:
            return HoldMatch("action_classes", f"[holds] action_classes holds {action} "
                                               f"calls ({source})", action)
        if self.high_risk and action in HIGH_RISK_CLASSES:
            hint = ("; if it only reads, list it in [holds] read_only"
                    if action == "non_idempotent_mutation" else "")
            return HoldMatch("high_risk", f"[holds] high_risk holds {call.tool}: {action} "
                                          f"({source}){hint}", action)
        return None


def parse_holds_table(table: Mapping[str, Any], source: str) -> HoldRules:
    """``[holds]``: high_risk, tools, action_classes, classes, read_only,
    read_only_servers, expires_after (a duration: ``"30m"``, ``"1h"``, seconds),
    risk_tier, show_arguments, and ``[holds.reviewers.NAME]`` tables."""
    _parse.check_keys(table, _TABLE_KEYS, source)
    return _parse.in_table(
        source, HoldRules,
        tools=_parse.strings(table.get("tools", []), "tools", source),
        high_risk=table.get("high_risk", False),
        action_classes=frozenset(_parse.strings(table.get("action_classes", []),
                                                "action_classes", source)),
        classes=_parse.string_table(table.get("classes", {}), "classes", source),
        read_only=_parse.strings(table.get("read_only", []), "read_only", source),
        read_only_servers=_parse.strings(table.get("read_only_servers", []),
                                         "read_only_servers", source),
        expires_after=_parse.duration(table.get("expires_after", "1h"), "expires_after",
                                      source),
        risk_tier=table.get("risk_tier", "high"),
        show_arguments=table.get("show_arguments", True),
        reviewers=parse_reviewers(table.get("reviewers", {}), source))


def approve_command(hold_id: str) -> str:
    return f"spanguard holds approve {hold_id} --as NAME"


class HoldError(GuardrailViolation):
    """A held, rejected or spent call; carries the hold record."""

    guard = GUARD_NAME

    def __init__(self, hold: HoldRecord, message: str) -> None:
        self.hold = hold
        self.hold_id = hold.id
        super().__init__(message)


class HoldPending(HoldError):
    """The call waits for a checker. ``summary`` is for humans; ``approve_command``
    is the exact command (with ``NAME`` to fill in)."""

    error_type = "held_for_approval"

    def __init__(self, hold: HoldRecord, previous: HoldRecord | None = None) -> None:
        self.summary = hold.summary
        self.approve_command = approve_command(hold.id)
        self.reject_command = f"spanguard holds reject {hold.id} --as NAME --reason TEXT"
        # A caller without call ids (MCP) re-making a call whose last request was
        # rejected or expired gets a new request; the old one's fate is reported here.
        self.previous = previous
        super().__init__(hold, f"{hold.tool} is held for approval (request {hold.id}, "
                               f"risk {hold.risk_tier}): {hold.reason}. A different "
                               f"identity must approve it: {self.approve_command}"
                               f"{_previous_text(previous)}")


def _previous_text(previous: HoldRecord | None) -> str:
    if previous is None:
        return ""
    if previous.status == "rejected":
        why = f": {previous.decision_reason}" if previous.decision_reason else ""
        return (f". The previous request {previous.id} for this call was rejected by "
                f"{previous.checker}{why}")
    if previous.status == "void":
        return (f". The approval of the previous request {previous.id} for this call was "
                f"refused: {previous.decision_reason}")
    return f". The previous request {previous.id} for this call expired undecided"


class HoldRejected(HoldError):
    """A checker rejected the call; it was not executed."""

    error_type = "hold_rejected"

    def __init__(self, hold: HoldRecord) -> None:
        why = f": {hold.decision_reason}" if hold.decision_reason else " (no reason given)"
        super().__init__(hold, f"{hold.tool} was rejected by {hold.checker}{why}. "
                               f"The call was not executed (request {hold.id}).")


class ApprovalRefused(HoldError):
    """The hold's approval did not hold up (unsigned, forged, altered, not allowed,
    expired); it was voided and the call not executed."""

    error_type = "hold_approval_invalid"

    def __init__(self, hold: HoldRecord, why: str) -> None:
        self.why = why
        super().__init__(hold, f"{hold.tool} was not executed: the approval {hold.id} was "
                               f"refused by the executing side: {why}. The refusal is in the "
                               "audit log; make the call again to request a new approval.")


class InvalidMaker(GuardrailViolation):
    """The maker's identity has invisible or control characters; nothing is held or run."""

    guard = GUARD_NAME
    error_type = "hold_invalid_identity"

    def __init__(self, maker: object, problem: str) -> None:
        self.maker = maker
        super().__init__(f"the maker identity {maker!r} {problem}; the call was not "
                         "executed and no approval was requested")


class HoldAlreadyUsed(HoldError):
    """This exact call already ran on its approval; an approval runs a call once."""

    error_type = "hold_approval_used"

    def __init__(self, hold: HoldRecord) -> None:
        super().__init__(hold, f"the approval {hold.id} for {hold.tool} was already used; "
                               "an approval executes a call once. Make the call again to "
                               "request a new approval.")


def hold_result_payload(error: HoldError) -> dict[str, Any]:
    """The JSON of an MCP ``CallToolResult`` telling the client the call did not run."""
    hold = error.hold
    structured: dict[str, Any] = {
        "status": "held" if isinstance(error, HoldPending) else hold.status,
        "hold_id": hold.id, "tool": hold.tool, "payload_hash": hold.payload_hash,
        "risk_tier": hold.risk_tier, "expires_at": hold.expires_at, "executed": False,
    }
    if hold.server is not None:
        structured["server"] = hold.server
    # Why it was held: the rule that matched, in words, and the call's class.
    structured.update(rule=hold.rule, reason=hold.reason, action_class=hold.action_class)
    if isinstance(error, HoldPending):
        structured["approve_command"] = error.approve_command
        structured["reject_command"] = error.reject_command
        if error.previous is not None:
            structured["previous"] = {
                "hold_id": error.previous.id, "status": error.previous.status,
                "checker": error.previous.checker,
                "decision_reason": error.previous.decision_reason}
    if hold.checker:
        structured["checker"] = hold.checker
        structured["decision_reason"] = hold.decision_reason
    return {"content": [{"type": "text", "text": str(error)}],
            "structuredContent": {"spanguard_hold": structured}, "isError": True}


def default_identity() -> str:
    """The OS user, the maker of a call when the adapter names no identity."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


class HoldGuard(Guard):
    """Holds matched calls; releases each approved one exactly once."""

    name = GUARD_NAME

    def __init__(self, rules: HoldRules | None, *, store: Store | None = None,
                 store_url: str | None = None, approvals: Approvals | None = None,
                 watched_tools: Sequence[str] = (), review: ReviewRules | None = None,
                 audit_keys: AuditKeys | None = None) -> None:
        """Requests go to ``approvals``, else ``store``, else ``open_store(store_url)``;
        ``review`` is the approval-latency floor checked before an approval is spent;
        ``audit_keys`` names the key its audit records are signed with."""
        self.rules = rules
        self.review = review
        self.reviewers = rules.reviewers if rules is not None else Reviewers()
        self.watched = frozenset(watched_tools)
        self._store = store
        self._store_url = store_url
        self._approvals = approvals
        self._audit_keys = audit_keys

    @property
    def approvals(self) -> Approvals:
        """Opened on first use, so building an Enforcer never touches the disk."""
        if self._approvals is None:
            store = self._store if self._store is not None else open_store(self._store_url)
            signer = self._audit_keys.signer() if self._audit_keys is not None else None
            self._approvals = Approvals.over(store, signer=signer)
        return self._approvals

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        if gate_for(call.tool, call.call_id) is not None:
            return None  # a gate around this call checked it already (gating.py)
        return self.check(call, maker=run.identity, trace_id=run.trace_id)

    def check(self, call: ToolCall, *, maker: str | None = None, trace_id: str | None = None,
              span_id: str | None = None) -> Decision | None:
        """None (not held), allow (approved, proven, now consumed), hold, or deny
        (rejected, used, or an approval that does not hold up)."""
        found = self.rules.matched(call) if self.rules is not None else None
        tier = self.rules.risk_tier if self.rules is not None else "high"
        if found is None and call.tool in self.watched:
            suspended = self.approvals.store.suspension(call.tool)
            if suspended is not None:
                found = HoldMatch("unverified", f"[verify] hold_on_failure: the last "
                                                f"{call.tool} was not verified: {suspended}",
                                  self.rules.action_class(call) if self.rules else None)
                tier = "unverified"
        if found is None:
            return None
        digest = hold_payload_hash(call)
        maker = maker or default_identity()
        problem = identity_problem(maker)
        if problem is not None:
            error = InvalidMaker(maker, problem)
            return Decision("deny", GUARD_NAME, str(error), {}, error)
        hold, previous = self._existing(call, digest, maker)
        if hold is not None and hold.status == "approved":
            why = approval_problem(hold, self.reviewers, self.approvals.clock())
            if why is not None:
                voided = self.approvals.void(hold, why)
                return _decision("deny", voided, ApprovalRefused(voided, why), "void")
            fast = self._below_floor(hold)
            if fast is not None and self.review is not None and self.review.action == "refuse":
                voided = self.approvals.void(hold, str(fast))
                return Decision("deny", GUARD_NAME, str(fast),
                                _attributes(voided, "approved", outcome="void"), fast)
            used = self.approvals.consume(hold, digest)
            if used is not None:
                return Decision("allow", GUARD_NAME, f"approved by {used.checker}",
                                _attributes(used, outcome="approved"), fast)
            hold = self.approvals.get(hold.id)
        if hold is not None and hold.status == "pending":
            return _decision("hold", hold, HoldPending(hold), "pending")
        if hold is not None and hold.status == "rejected":
            return _decision("deny", hold, HoldRejected(hold), "rejected")
        if hold is not None and hold.status == "executed":
            return _decision("deny", hold, HoldAlreadyUsed(hold), "used")
        if hold is not None and hold.status == "void":
            why = hold.decision_reason or "the approval was refused"
            return _decision("deny", hold, ApprovalRefused(hold, why), "void")
        if trace_id is None or span_id is None:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                trace_id = trace_id or format(context.trace_id, "032x")
                span_id = span_id or format(context.span_id, "016x")
        created = self.approvals.request(
            tool=call.tool, payload_hash=digest, maker=maker, risk_tier=tier,
            reason=found.reason,
            expires_after=self.rules.expires_after if self.rules else 3600.0,
            summary=self._summary(call, maker, found.reason), call_id=call.call_id,
            trace_id=trace_id, span_id=span_id, server=call.server,
            action_class=found.action_class, rule=found.rule)
        return _decision("hold", created, HoldPending(created, previous), "created")

    def _below_floor(self, hold: HoldRecord) -> ReviewBelowFloor | None:
        review = self.review
        if review is None or not review.too_fast(hold.review_seconds):
            return None
        assert hold.review_seconds is not None and review.min_review_seconds is not None
        return ReviewBelowFloor(hold.id, hold.review_seconds, review.min_review_seconds,
                                refused=review.action == "refuse")


    def _existing(self, call: ToolCall, digest: str,
                  maker: str) -> tuple[HoldRecord | None, HoldRecord | None]:
        """The hold this call answers to (None: a new one is needed), and when a new
        one is needed for a caller without call ids, its last rejected/expired one.

        With a call id (LangGraph's tool_call id, stable across a resumed node) only
        that call's own hold counts; without one (an MCP client retrying), the
        newest live hold of the same maker and payload. Another maker's approval
        for an identical call never releases this one.
        """
        now = self.approvals.clock()
        mine = [h for h in self.approvals.store.matching(call.tool, digest)
                if same_identity(h.maker, maker) and h.server == call.server]
        if call.call_id is not None:
            own = next((h for h in mine if h.call_id == call.call_id), None)
            if own is not None and own.expired(now):
                own = self.approvals.expire(own)
            return (own if own is not None and own.status != "expired" else None), None
        for hold in mine:
            if hold.status in ACTIVE:
                if hold.expired(now):
                    self.approvals.expire(hold)
                    continue
                return hold, None
        newest = mine[0] if mine else None
        if newest is not None and newest.status in ACTIVE:  # expired just now, above
            newest = self.approvals.get(newest.id)
        return None, newest if newest is not None and newest.status in (
            "rejected", "expired", "void") else None

    def _summary(self, call: ToolCall, maker: str, reason: str) -> str:
        text = f"{maker} asks to run {call.tool}"
        if call.server is not None:
            text += f" on server {call.server}"
        if self.rules is None or self.rules.show_arguments:
            args = canonical_json(dict(call.arguments))
            if len(args) > _ARGUMENT_PREVIEW:
                args = args[:_ARGUMENT_PREVIEW] + "…"
            text += f" with {args}"
        return f"{text} ({reason})"


def hold_payload_hash(call: ToolCall) -> str:
    """What an approval is bound to: the arguments, and the server when there is one.

    Without a server (LangGraph, LlamaIndex) it is the arguments' own hash, as
    before servers were bound, so holds made then still match.
    """
    arguments = dict(call.arguments)
    if call.server is None:
        return payload_hash(arguments)
    return payload_hash({"arguments": arguments, "server": call.server})


def _attributes(hold: HoldRecord, decision: str | None = None, *,
                outcome: str) -> dict[str, Any]:
    """What the decision says about the hold; ``outcome`` is what happened to it on this
    call (``created``, ``pending``, ``approved``, ``rejected``, ``used``, ``void``) and,
    with the checker who decided, goes on the tool span too (the Enforcer copies it)."""
    attributes: dict[str, Any] = {sc.HOLD_ID: hold.id, sc.HOLD_STATUS: hold.status,
                                  sc.HOLD_DECISION: outcome,
                                  sc.TOOL_ARGS_HASH: hold.payload_hash}
    if hold.checker:
        attributes[sc.HOLD_CHECKER] = hold.checker
    if hold.review_seconds is not None:
        attributes[sc.REVIEW_SECONDS] = hold.review_seconds
        attributes[sc.REVIEW_DECISION] = decision or (
            "rejected" if hold.status == "rejected" else "approved")
    return attributes


def _decision(kind: Any, hold: HoldRecord, error: HoldError, outcome: str) -> Decision:
    return Decision(kind, GUARD_NAME, str(error), _attributes(hold, outcome=outcome), error)


def build_hold_guards(policy: Policy, store: Store | None = None) -> list[Guard]:
    """One guard when the policy holds anything or verification may suspend a tool;
    its requests go to ``store``, else to the policy's store (opened at first use)."""
    watched = policy.verify.watched_tools() if policy.verify is not None else ()
    if policy.holds is None and not watched:
        return []
    url = policy.store.url if policy.store is not None else None
    return [HoldGuard(policy.holds, store=store, store_url=url, watched_tools=watched,
                      review=policy.review, audit_keys=policy.audit)]
