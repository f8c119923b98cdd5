"""``spanguard holds list|show|approve|reject``: the checker's terminal.

Exit codes (scriptable): 0 done, 1 refused (maker approving their own call, already
decided, expired), 3 no such hold, 4 store unusable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from spanguard.cli._common import EXIT_CHECK_FAILED, EXIT_NOT_FOUND, EXIT_OK
from spanguard.guardrails.approvals import ApprovalError, Approvals, HoldNotFound
from spanguard.guardrails.stores import open_store
from spanguard.guardrails.stores.records import HoldRecord


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (default: $SPANGUARD_STORE_URL or "
                                        "sqlite under the spanguard home)")
    sub = parser.add_subparsers(dest="holds_command", metavar="ACTION", required=True)
    list_parser = sub.add_parser("list", help="approval requests, newest first")
    list_parser.add_argument("--status", choices=["pending", "approved", "rejected",
                                                  "expired", "executed"])
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
        decide.add_argument("--reason", help="why (recorded in the audit log)")
        decide.add_argument("--json", action="store_true")
        decide.set_defaults(run=run_decide, action=action)


def _approvals(args: argparse.Namespace) -> Approvals:
    return Approvals.over(open_store(args.store, home=getattr(args, "home", None)))


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
            ("trace id", hold.trace_id or "-"), ("span id", hold.span_id or "-")]
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
    approvals = _approvals(args)
    decide = approvals.approve if args.action == "approve" else approvals.reject
    try:
        hold = decide(args.hold_id, args.identity, args.reason)
    except HoldNotFound as exc:
        print(f"spanguard: {exc}")
        return EXIT_NOT_FOUND
    except ApprovalError as exc:
        print(f"spanguard: refused: {exc}")
        return EXIT_CHECK_FAILED
    if args.json:
        print(json.dumps(hold.to_json()))
    else:
        print(f"{hold.id} {hold.status} by {hold.checker}: {hold.tool} "
              + ("may now run once (the same call, same arguments)"
                 if hold.status == "approved" else "will not run"))
    return EXIT_OK
