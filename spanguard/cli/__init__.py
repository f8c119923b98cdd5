"""The ``spanguard`` command.

Subcommands live in their own modules and are imported only when used, so the
core CLI never imports the guardrails or the MCP bridge (layering), and
``spanguard traces list`` starts fast.

Exit codes are scriptable: 0 success, 1 a check failed, 2 usage or
configuration error, 3 not found, 4 local store unusable, 5 an id prefix
matches more than one trace (the candidates are listed on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from spanguard.cli._common import EXIT_AMBIGUOUS, EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_STORE
from spanguard.errors import (
    AmbiguousTraceId,
    ConfigError,
    SpanguardError,
    StoreError,
    TraceNotFound,
)
from spanguard.extras import missing_extra

# name -> (module with register(subparsers) and run(args), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "traces": ("spanguard.cli.traces", "list and show traces in the local store"),
    "demo": ("spanguard.cli.demo", "run the offline demo and print its span tree"),
    "holds": ("spanguard.guardrails._holds_cli",
              "list, show, approve and reject held tool calls"),
    "audit": ("spanguard.guardrails._audit_cli",
              "verify, anchor and list the governance audit log"),
    "reviewer": ("spanguard.guardrails._reviewer_cli",
                 "create and show a reviewer's approval signing key"),
    "report": ("spanguard.cli.report",
               "runs, errors, latency, tokens, cost and outcomes per model/tenant/agent"),
    "mcp": ("spanguard.mcp_bridge.cli", "wrap an MCP server in a tracing, guarding proxy"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spanguard",
        description="One OpenTelemetry span tree per agent run, and the guardrails on it.")
    parser.add_argument("--home", help="spanguard home (default: $SPANGUARD_HOME or ./.spanguard)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name == command:
            module = importlib.import_module(module_name)
            module.register(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if a in COMMANDS), None)
    try:
        parser = build_parser(command)
    except ImportError as exc:
        print(f"spanguard: {missing_extra(f'the {command!r} command', exc)}", file=sys.stderr)
        return EXIT_CONFIG
    args = parser.parse_args(args_list)
    if not args.command:
        parser.print_help()
        return EXIT_CONFIG
    try:
        result: int = args.run(args)
        return result
    except AmbiguousTraceId as exc:
        print(f"spanguard: {exc}", file=sys.stderr)
        return EXIT_AMBIGUOUS
    except TraceNotFound as exc:
        print(f"spanguard: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except StoreError as exc:
        print(f"spanguard: {exc}", file=sys.stderr)
        return EXIT_STORE
    except ConfigError as exc:
        print(f"spanguard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SpanguardError as exc:
        print(f"spanguard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`spanguard traces list | head`): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
