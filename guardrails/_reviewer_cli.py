"""``spanguard reviewer init|show --as NAME``: a reviewer's signing key.

``init`` creates an Ed25519 key pair for the reviewer: the private key at
``$SPANGUARD_REVIEWER_KEYS/NAME.key`` (default ``~/.config/spanguard/reviewers``),
mode 0600 in a 0700 directory, never inside the agent's spanguard home; it
prints the public key and the policy lines that make NAME a reviewer. ``show``
prints them again.
"""

from __future__ import annotations

import argparse
import re

from spanguard.cli._common import EXIT_OK
from spanguard.errors import ConfigError
from spanguard.guardrails.identity import identity_problem
from spanguard.guardrails.signing import (
    Signer,
    create_key_file,
    outside_home,
    reviewer_key_path,
)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="reviewer_command", metavar="ACTION", required=True)
    for action, text in (("init", "create a reviewer's key pair"),
                         ("show", "print a reviewer's public key and policy lines")):
        command = sub.add_parser(action, help=text)
        command.add_argument("--as", dest="identity", required=True, metavar="NAME",
                             help="the reviewer's name, as the policy will list it")
        command.add_argument("--dir", help="key directory (default: $SPANGUARD_REVIEWER_KEYS, "
                                           "else ~/.config/spanguard/reviewers)")
        command.set_defaults(run=run_init if action == "init" else run_show)


def _name(args: argparse.Namespace) -> str:
    name: str = args.identity.strip()
    problem = identity_problem(name)
    if problem is not None:
        raise ConfigError("--as", f"the reviewer name {problem}")
    return name


def _policy_lines(name: str, public: str) -> str:
    table = name if _BARE_KEY.fullmatch(name) else f'"{name}"'
    return f'[holds.reviewers.{table}]\nkey = "{public}"'


def run_init(args: argparse.Namespace) -> int:
    name = _name(args)
    path = outside_home(reviewer_key_path(name, args.dir), getattr(args, "home", None))
    signer = create_key_file(path)
    print(f"created the key of reviewer {name!r}: {path} (mode 0600, readable by you "
          "only; keep it away from the agent's user and machine)")
    print(f"public key: {signer.public}\n\nadd to the policy (optionally with tools = [...], "
          f"action_classes = [...], servers = [...]):\n\n{_policy_lines(name, signer.public)}")
    print(f"\napprove with: spanguard holds approve ID --as {name}")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    name = _name(args)
    signer = Signer.from_file(reviewer_key_path(name, args.dir))
    print(f"public key: {signer.public}\n\n{_policy_lines(name, signer.public)}")
    return EXIT_OK
