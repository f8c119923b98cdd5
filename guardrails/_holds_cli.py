"""``spanguard holds list|show|approve|reject``: the checker's terminal.

``approve`` and ``reject`` sign the decision with the reviewer's key when there
is one (``--key FILE``, else the key ``spanguard reviewer init --as NAME``
created for ``--as NAME``); with a policy that lists reviewers (``--policy`` or
``SPANGUARD_POLICY``) they must, and the key decides who the checker is.

Exit codes (scriptable): 0 done, 1 refused (maker approving their own call, already
decided, expired, unsigned or not an allowed reviewer), 2 bad key or policy,
3 no such hold, 4 store unusable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from spanguard.cli._common import EXIT_CHECK_FAILED, EXIT_NOT_FOUND, EXIT_OK
from spanguard.errors import ConfigError
from spanguard.guardrails.approvals import ApprovalError, Approvals, HoldNotFound
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.reviewers import Reviewers
from spanguard.guardrails.signing import Signer, reviewer_key_path
from spanguard.guardrails.stores import Store, open_store
from spanguard.guardrails.stores.records import HoldRecord


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (default: $SPANGUARD_STORE_URL or "
                                        "sqlite under the spanguard home)")
    sub = parser.add_subparsers(dest="holds_command", metavar="ACTION", required=True)
    list_parser = sub.add_parser("list", help="approval requests, newest first")
    list_parser.add_argument("--status", choices=["pending", "approved", "rejected",
                                                  "expired", "executed", "void"])
    list_parser.add_argument("--limit", type=int, default=50)
    list_parser.add_argument("--json", action="store_true", help="one JSON object per hold")
    list_parser.set_defaults(run=run_list)
    show = sub.add_parser("show", help="one approval request in full")
    show.add_argument("hold_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=run_show)
    for action in ("approve", "reject"):
        decide = sub.add_parser(action, help=f"{action} a pending request as a checker")
        decide.add_argument("hold_id")
        decide.add_argument("--as", dest="identity", required=True, metavar="NAME",
                            help="the checker's identity (must differ from the maker)")
        decide.add_argument("--key", metavar="FILE",
                            help="the reviewer's private key (default: the key "
                                 "`spanguard reviewer init --as NAME` created, if any)")
        decide.add_argument("--policy", metavar="FILE",
                            help="the policy whose reviewers decide (default: "
                                 "$SPANGUARD_POLICY); its [store] is used without --store")
        decide.add_argument("--reason", help="why (recorded in the audit log)")
        decide.add_argument("--json", action="store_true")
        decide.set_defaults(run=run_decide, action=action)


def _store(args: argparse.Namespace, policy: Policy | None = None) -> Store:
    url = args.store
    if url is None and policy is not None and policy.store is not None:
        url = policy.store.url
    return open_store(url, home=getattr(args, "home", None))


def _approvals(args: argparse.Namespace) -> Approvals:
    """A read-only view: listing never writes (an expiry is shown, not recorded)."""
    return Approvals.over(_store(args), persist_expiry=False)


def _signer(args: argparse.Namespace) -> Signer | None:
    """``--key``, else the reviewer's default key for ``--as`` if it exists."""
    if args.key:
        return Signer.from_file(args.key)
    try:
        default = reviewer_key_path(args.identity.strip())
    except ConfigError:  # a name that cannot be a file name has no default key
        return None
    return Signer.from_file(default) if default.exists() else None


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{dt.datetime.fromtimestamp(seconds, dt.timezone.utc):%Y-%m-%d %H:%M:%S}"


def run_list(args: argparse.Namespace) -> int:
    holds = _approvals(args).list(args.status, args.limit)
    if args.json:
        for hold in holds:
            print(json.dumps(hold.to_json()))
        return EXIT_OK
    if not holds:
        print("no holds")
        return EXIT_OK
    print(f"{'ID':17}  {'STATUS':9}  {'TOOL':20}  {'MAKER':12}  {'CHECKER':12}  "
          f"{'EXPIRES (UTC)':19}")
    for h in holds:
        print(f"{h.id:17}  {h.status:9}  {h.tool:20}  {h.maker:12}  {h.checker or '-':12}  "
              f"{_when(h.expires_at)}")
    return EXIT_OK


def _print_hold(hold: HoldRecord) -> None:
    rows = [("id", hold.id), ("status", hold.status), ("tool", hold.tool),
            ("server", hold.server or "-"), ("summary", hold.summary), ("reason", hold.reason),
            ("payload hash", hold.payload_hash), ("maker", hold.maker),
            ("risk tier", hold.risk_tier), ("created", _when(hold.created_at)),
            ("expires", _when(hold.expires_at)), ("checker", hold.checker or "-"),
            ("decision reason", hold.decision_reason or "-"),
            ("decided", _when(hold.decided_at)), ("executed", _when(hold.executed_at)),
            ("trace id", hold.trace_id or "-"), ("span id", hold.span_id or "-"),
            ("server", hold.server or "-"), ("rule", hold.rule or "-"),
            ("action class", hold.action_class or "-"),
            ("signed by", hold.signed_by or "-")]
    for label, value in rows:
        print(f"{label + ':':17}{value}")
    if hold.status == "pending":
        print(f"\napprove: spanguard holds approve {hold.id} --as NAME [--reason TEXT]"
              f"\nreject:  spanguard holds reject {hold.id} --as NAME [--reason TEXT]")


def run_show(args: argparse.Namespace) -> int:
    try:
        hold = _approvals(args).get(args.hold_id)
    except HoldNotFound as exc:
        print(f"spanguard: {exc}")
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(hold.to_json()))
    else:
        _print_hold(hold)
    return EXIT_OK


def run_decide(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    reviewers = policy.holds.reviewers if policy is not None and policy.holds else Reviewers()
    signer = _signer(args)
    approvals = Approvals.over(_store(args, policy), signer=signer)
    decide = approvals.approve if args.action == "approve" else approvals.reject
    try:
        hold = decide(args.hold_id, args.identity, args.reason, signer=signer,
                      reviewers=reviewers)
    except HoldNotFound as exc:
        print(f"spanguard: {exc}")
        return EXIT_NOT_FOUND
    except ApprovalError as exc:
        print(f"spanguard: refused: {exc}")
        return EXIT_CHECK_FAILED
    if args.json:
        print(json.dumps(hold.to_json()))
        return EXIT_OK
    print(f"{hold.id} {hold.status} by {hold.checker}: {hold.tool} "
          + ("may now run once (the same call, same arguments)"
             if hold.status == "approved" else "will not run"))
    if signer is not None:
        print(f"signed with {signer.public} ({signer.path})")
    else:
        print("unsigned (development mode): a policy that lists reviewers refuses it; "
              "see `spanguard reviewer init`")
    return EXIT_OK
