"""``spanguard traces list|show``: the local store from a terminal or a script."""

from __future__ import annotations

import argparse
import datetime as dt

from spanguard.cli._common import EXIT_OK, open_store, print_json_lines


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="traces_command", metavar="ACTION", required=True)
    list_parser = sub.add_parser("list", help="most recent traces first")
    list_parser.add_argument("--limit", type=int, default=20)
    list_parser.add_argument("--json", action="store_true", help="one JSON object per trace")
    list_parser.set_defaults(run=run_list)
    show = sub.add_parser("show", help="one trace as a tree",
                          epilog="exit status 3 if no trace matches, 5 if the prefix "
                                 "matches several (they are listed on stderr)")
    show.add_argument("trace_id", help="trace id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="one JSON object per span")
    show.set_defaults(run=run_show)


def run_list(args: argparse.Namespace) -> int:
    summaries = open_store(args).traces(limit=args.limit)
    if args.json:
        print_json_lines([s.to_json() for s in summaries])
        return EXIT_OK
    if not summaries:
        print("no traces yet: run an agent with spanguard configured, or `spanguard demo`")
        return EXIT_OK
    print(f"{'TRACE ID':32}  {'STARTED (UTC)':19}  {'STATUS':9}  {'SPANS':>5}  {'ERR':>3}  "
          f"{'TOKENS':>8}  {'COST $':>9}  ROOT")
    for s in summaries:
        started = dt.datetime.fromtimestamp(s.start_time / 1e9, dt.timezone.utc)
        cost = f"{s.cost_usd:.6f}" if s.cost_usd is not None else "-"
        print(f"{s.trace_id:32}  {started:%Y-%m-%d %H:%M:%S}  {s.status:9}  {s.span_count:>5}  "
              f"{s.error_count:>3}  {s.input_tokens + s.output_tokens:>8}  {cost:>9}  "
              f"{s.root_name}")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    spans = open_store(args).trace(args.trace_id)
    if args.json:
        print_json_lines([span.to_json() for span in spans])
    else:
        # Imported here: rendering needs the semantic-convention vocabulary (and with
        # it OpenTelemetry's metrics API), which `traces list` does not.
        from spanguard.tree import build_forest, render

        print(render(build_forest(spans)))
    return EXIT_OK
