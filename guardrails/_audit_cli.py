"""``spanguard audit verify|anchor|list|keygen``: check, pin and read the audit log.

``verify`` exits 1 and names the first record that breaks the chain, its
signatures or its meaning (with ``--policy``: the reviewers' and the audit
writer's keys), or a head that no longer matches ``--expect-head``. ``anchor``
prints the head (``SEQ:HASH``) to keep outside the store. ``keygen`` creates
the audit writer's key pair.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from spanguard.cli._common import EXIT_CHECK_FAILED, EXIT_OK
from spanguard.guardrails.audit import AuditLog, check_chain
from spanguard.guardrails.audit_check import AuditTrust, check_log
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.signing import create_key_file, outside_home
from spanguard.guardrails.stores import open_store


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (default: the policy's [store], else "
                                        "$SPANGUARD_STORE_URL, else sqlite under the "
                                        "spanguard home)")
    with_policy = argparse.ArgumentParser(add_help=False)
    with_policy.add_argument("--policy", metavar="FILE",
                             help="the policy whose keys (and [store]) the log is checked "
                                  "against (default: $SPANGUARD_POLICY)")
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", parents=[with_policy],
                            help="check the chain, its signatures and the hold records' "
                                 "meaning; exit 1 at the first bad record")
    verify.add_argument("--expect-head", metavar="SEQ:HASH",
                        help="an anchor printed by `spanguard audit anchor`: detects a "
                             "cut-off or rewritten tail")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=run_verify)
    anchor = sub.add_parser("anchor", parents=[with_policy],
                            help="print the head (SEQ:HASH) to pin outside the store")
    anchor.add_argument("--out", metavar="FILE", help="also write it to FILE")
    anchor.add_argument("--json", action="store_true")
    anchor.set_defaults(run=run_anchor)
    list_parser = sub.add_parser("list", parents=[with_policy],
                                 help="audit records, oldest first")
    list_parser.add_argument("--json", action="store_true", help="one JSON object per record")
    list_parser.add_argument("--limit", type=int, default=0, help="only the last N records")
    list_parser.set_defaults(run=run_list)
    keygen = sub.add_parser("keygen", help="create the audit writer's key pair ([audit])")
    keygen.add_argument("--out", metavar="FILE", required=True,
                        help="where the private key goes (mode 0600; not under the "
                             "agent's spanguard home)")
    keygen.set_defaults(run=run_keygen)


def _policy(args: argparse.Namespace) -> Policy | None:
    return load_policy(getattr(args, "policy", None))


def _log(args: argparse.Namespace, policy: Policy | None = None) -> AuditLog:
    url = args.store
    if url is None and policy is not None and policy.store is not None:
        url = policy.store.url
    return AuditLog(open_store(url, home=getattr(args, "home", None)).audit)


def run_verify(args: argparse.Namespace) -> int:
    policy = _policy(args)
    check = check_log(_log(args, policy).records(), AuditTrust.of(policy), args.expect_head)
    if args.json:
        print(json.dumps(check.to_json()))
    elif check.ok:
        print(f"audit log intact: {check.records} record(s), head {check.anchor}")
        for note in check.notes:
            print(f"note: {note}")
    else:
        print(f"audit log BROKEN at record {check.broken_seq}: {check.reason}")
    return EXIT_OK if check.ok else EXIT_CHECK_FAILED


def run_anchor(args: argparse.Namespace) -> int:
    check = check_chain(_log(args, _policy(args)).records())
    if not check.ok:
        print(f"not anchored: the chain is BROKEN at record {check.broken_seq}: {check.reason}")
        return EXIT_CHECK_FAILED
    if args.out:
        Path(args.out).write_text(check.anchor + "\n")
    if args.json:
        print(json.dumps({"anchor": check.anchor, "seq": check.records, "head": check.head}))
    else:
        print(check.anchor)
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    records = _log(args, _policy(args)).records()
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
        detail = " ".join(f"{k}={v}" for k, v in r.detail.items()
                          if v is not None and k != "signature")
        print(f"{r.seq:>6}  {when:%Y-%m-%d %H:%M:%S}  {r.event:22}  {r.actor or '-':12}  "
              f"{r.subject or '-':17}  {detail}")
    return EXIT_OK


def run_keygen(args: argparse.Namespace) -> int:
    path = outside_home(Path(args.out), getattr(args, "home", None))
    signer = create_key_file(path)
    print(f"created the audit writer key {path} (mode 0600): give it to the process that "
          "runs the tools only")
    print(f"public key: {signer.public}\n\nadd to the policy:\n\n[audit]\n"
          f'writer_key = "{signer.public}"\nwriter_key_file = "{path}"')
    return EXIT_OK
