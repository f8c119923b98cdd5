"""Exit codes and small helpers shared by the CLI's subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from spanguard.home import resolve_home
from spanguard.store import DB_NAME, TraceStore

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CONFIG = 2
EXIT_NOT_FOUND = 3
EXIT_STORE = 4
EXIT_AMBIGUOUS = 5


def open_store(args: argparse.Namespace) -> TraceStore:
    """The local store; a missing database is an empty one, not an error."""
    return TraceStore(resolve_home(getattr(args, "home", None)) / DB_NAME)


def print_json_lines(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row, default=str) + "\n")
