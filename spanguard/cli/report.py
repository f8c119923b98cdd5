"""``spanguard report``: runs, errors, latency, tokens, cost and outcomes per group."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time

from spanguard.cli._common import EXIT_OK, open_store, print_json_lines
from spanguard.errors import ConfigError
from spanguard.report import GroupReport, build_report

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", choices=("model", "tenant", "agent"), default="model",
                        help="group runs by model, hashed tenant or agent (default: model)")
    parser.add_argument("--since", help="only runs started in this window: 30m, 24h, 7d, 2w, "
                                        "or an ISO date/time (UTC if no zone)")
    parser.add_argument("--json", action="store_true", help="one JSON object per group")
    parser.set_defaults(run=run_report)


def parse_since(text: str, now: float | None = None) -> int:
    """``--since`` as nanoseconds since the epoch."""
    now = time.time() if now is None else now
    match = _DURATION.fullmatch(text.strip().lower())
    if match:
        return int((now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]) * 1e9)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError("--since", f"cannot read {text!r}",
                          "use a window such as 30m, 24h, 7d, or an ISO date like "
                          "2026-01-31 or 2026-01-31T08:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1e9)


def run_report(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else 0
    groups = build_report(open_store(args).spans(since_ns=since), args.by)
    if args.json:
        print_json_lines([group.to_json(args.by) for group in groups])
        return EXIT_OK
    if not groups:
        print("no runs in the local store" + (f" since {args.since}" if args.since else ""))
        return EXIT_OK
    print(f"{args.by.upper():24}  {'RUNS':>5}  {'ERR%':>5}  {'PEND':>4}  {'CANC':>4}  "
          f"{'P50 ms':>8}  {'P95 ms':>8}  "
          f"{'TOKENS IN':>9}  {'OUT':>7}  {'COST $':>10}  {'$/SUCCESS':>10}  {'LOOP':>4}  "
          f"{'HOLDS':>5}  ERRORS  |  FINDINGS")
    for group in groups:
        print(_row(group))
    return EXIT_OK


def _row(group: GroupReport) -> str:
    data = group.to_json("")
    per_success = data["cost_per_successful_outcome"]
    cost = f"{group.cost_usd:.6f}" + ("*" if group.runs_cost_unknown else "")
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(group.errors_by_type.items()))
    findings = ", ".join(f"{kind} {count}"
                         for kind, count in sorted(group.findings_by_type.items()))
    return (f"{group.key[:24]:24}  {group.runs:>5}  {group.error_rate * 100:>5.1f}  "
            f"{group.pending:>4}  {group.cancelled:>4}  {_ms(data['p50_ms']):>8}  "
            f"{_ms(data['p95_ms']):>8}  {group.input_tokens:>9}  "
            f"{group.output_tokens:>7}  {cost:>10}  "
            f"{(f'{per_success:.6f}' if per_success is not None else '-'):>10}  "
            f"{group.loop_refusals:>4}  {group.holds_pending:>5}  {errors or '-'}  |  "
            f"{findings or '-'}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
