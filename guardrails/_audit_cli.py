"""``spanguard audit verify|list``: check and read the hash-chained audit log.

``verify`` exits 1 and names the first broken record when the chain does not hold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from spanguard.cli._common import EXIT_CHECK_FAILED, EXIT_OK
from spanguard.guardrails.audit import AuditLog
from spanguard.guardrails.stores import open_store


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (default: $SPANGUARD_STORE_URL or "
                                        "sqlite under the spanguard home)")
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check the hash chain; exit 1 if it is broken")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=run_verify)
    list_parser = sub.add_parser("list", help="audit records, oldest first")
    list_parser.add_argument("--json", action="store_true", help="one JSON object per record")
    list_parser.add_argument("--limit", type=int, default=0, help="only the last N records")
    list_parser.set_defaults(run=run_list)


def _log(args: argparse.Namespace) -> AuditLog:
    return AuditLog(open_store(args.store, home=getattr(args, "home", None)).audit)


def run_verify(args: argparse.Namespace) -> int:
    check = _log(args).verify()
    if args.json:
        print(json.dumps(check.to_json()))
    elif check.ok:
        print(f"audit chain intact: {check.records} record(s), head {check.head}")
    else:
        print(f"audit chain BROKEN at record {check.broken_seq}: {check.reason}")
    return EXIT_OK if check.ok else EXIT_CHECK_FAILED


def run_list(args: argparse.Namespace) -> int:
    records = _log(args).records()
    if args.limit > 0:
        records = records[-args.limit:]
    if args.json:
        for record in records:
            print(json.dumps(record.to_json()))
        return EXIT_OK
    if not records:
        print("no audit records")
        return EXIT_OK
    for r in records:
        when = dt.datetime.fromtimestamp(r.ts, dt.timezone.utc)
        detail = " ".join(f"{k}={v}" for k, v in r.detail.items() if v is not None)
        print(f"{r.seq:>6}  {when:%Y-%m-%d %H:%M:%S}  {r.event:22}  {r.actor or '-':12}  "
              f"{r.subject or '-':17}  {detail}")
    return EXIT_OK
