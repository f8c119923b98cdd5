"""``spanguard mcp wrap [--policy F] [--name NAME] [--preset P] ... -- CMD ARGS...``

Put it in front of any stdio MCP server in a client's config: the client talks
to the proxy exactly as it talked to the server. Spans go where ``configure()``
sends them: the local store under SPANGUARD_HOME, plus OTLP to ``--preset
phoenix`` / ``--preset langfuse`` (``PHOENIX_COLLECTOR_ENDPOINT``,
``LANGFUSE_HOST`` and the ``LANGFUSE_*`` keys, as ``configure()`` reads them), else
to ``OTEL_EXPORTER_OTLP_*``; they are flushed when the proxy exits. Logs go to
stderr; stdout carries protocol messages only. No MCP SDK is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any, get_args

from spanguard.cli._common import EXIT_CONFIG
from spanguard.config import Preset, configure
from spanguard.guardrails.policy import load_policy
from spanguard.mcp_bridge.proxy import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_UPSTREAM_TIMEOUT,
    McpProxy,
    RestartPolicy,
    install_signal_handlers,
    open_stdio,
)

SERVICE_NAME = "spanguard-mcp-proxy"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mcp_command", metavar="SUBCOMMAND")
    wrap = sub.add_parser(
        "wrap", help="run an MCP server behind a tracing, guarding stdio proxy",
        description="Start CMD ARGS... as an MCP server and serve it on stdio, adding a "
                    "span per request and the guardrail hook on tools/call.")
    wrap.add_argument("--policy", help="guardrail policy TOML (default: $SPANGUARD_POLICY)")
    wrap.add_argument("--name", metavar="NAME",
                      help="the server's identity: holds and approvals are bound to it, "
                           "and the checker sees it (default: a hash of the command line)")
    wrap.add_argument("--preset", choices=get_args(Preset),
                      help="also export to Phoenix or Langfuse, as configure(preset=...) "
                           "does (LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY; "
                           "PHOENIX_COLLECTOR_ENDPOINT)")
    wrap.add_argument("--identity",
                      help="who the calls act for (the maker, for holds); default: OS user")
    wrap.add_argument("--hold-wait", type=float, default=0.0, metavar="SECONDS",
                      help="a held tools/call waits up to SECONDS for a checker's decision "
                           "instead of answering 'held' at once (default 0)")
    wrap.add_argument("--restart-on-crash", action="store_true",
                      help="restart the server if it exits, replaying the client's "
                           "initialize; readOnlyHint/idempotentHint tool calls in flight "
                           "are re-sent (per the policy's [retry])")
    wrap.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                      help="largest JSON-RPC message accepted either way (default 10 MiB)")
    wrap.add_argument("--upstream-timeout", type=float, default=DEFAULT_UPSTREAM_TIMEOUT,
                      metavar="SECONDS",
                      help="deadline of each request the proxy makes itself (listing tools "
                           "for annotations, a verifier's read-back; default "
                           f"{DEFAULT_UPSTREAM_TIMEOUT:g})")
    wrap.add_argument("--call-timeout", type=float, default=None, metavar="SECONDS",
                      help="deadline of each forwarded request: past it the client gets "
                           "-32001 and the server a cancellation (default: none)")
    wrap.add_argument("server", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...",
                      help="the MCP server's command line")
    wrap.set_defaults(run=run_wrap)
    parser.set_defaults(run=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_CONFIG


def run_wrap(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="spanguard mcp wrap: %(levelname)s %(message)s")
    command = list(args.server)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("spanguard mcp wrap: no server command; usage: "
              "spanguard mcp wrap [options] -- CMD ARGS...", file=sys.stderr)
        return EXIT_CONFIG
    if args.hold_wait < 0:
        print("spanguard mcp wrap: --hold-wait must be 0 or more seconds", file=sys.stderr)
        return EXIT_CONFIG
    for option, value in (("--upstream-timeout", args.upstream_timeout),
                          ("--call-timeout", args.call_timeout)):
        if value is not None and not value > 0:
            print(f"spanguard mcp wrap: {option} must be more than 0 seconds",
                  file=sys.stderr)
            return EXIT_CONFIG
    if args.name is not None and not args.name.strip():
        print("spanguard mcp wrap: --name must not be empty", file=sys.stderr)
        return EXIT_CONFIG
    # Read before configure(): a bad policy is reported before anything is set up.
    policy = load_policy(args.policy)
    handle = configure(home=args.home, preset=args.preset,
                       service_name=None if os.environ.get("OTEL_SERVICE_NAME") else SERVICE_NAME)
    try:
        proxy = McpProxy(command, tracer_provider=handle.tracer_provider,
                         meter_provider=handle.meter_provider, policy=policy,
                         identity=args.identity, hold_wait=args.hold_wait,
                         server_name=args.name,
                         restart=RestartPolicy(enabled=args.restart_on_crash),
                         max_message_bytes=args.max_message_bytes,
                         upstream_timeout=args.upstream_timeout,
                         call_timeout=args.call_timeout)
        return _run_loop(_serve(proxy))
    finally:
        handle.shutdown()


async def _serve(proxy: McpProxy) -> int:
    reader, writer = await open_stdio()
    install_signal_handlers(proxy.shutdown)
    return await proxy.run(reader, writer)


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (``spanguard[mcp]`` brings it on POSIX).

    The proxy's own work per request is ~70 µs; the rest of its cost is event
    loop and syscalls, which uvloop does in C. ``SPANGUARD_MCP_LOOP=asyncio``
    forces the stdlib loop.
    """
    if os.environ.get("SPANGUARD_MCP_LOOP", "auto") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
