"""Latency of ``tools/call`` to mcp-server-time, direct vs through ``spanguard mcp wrap``.

Both sessions use the real SDK client over stdio and stay open for the whole
run; calls alternate in blocks (direct block, proxied block, ...) so machine
noise hits both alike. The proxy runs with tracing into the local store and a
real policy file (``POLICY``): the hold, tool-loop and loop-budget guards all
look at every call, none of them refuses one, so each call takes the path every
allowed call takes in production.

    python benchmarks/mcp_proxy_latency.py            # 2,000 calls each way
    python benchmarks/mcp_proxy_latency.py --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

TIME_SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
ARGS = {"timezone": "UTC"}
POLICY = """
[holds]
tools = ["never_*"]
[tool_loop]
identical_calls = 1000000
[loop_budget]
max_tool_calls = 1000000
"""


async def open_session(stack: AsyncExitStack, command: list[str],
                       env: dict[str, str]) -> ClientSession:
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    read, write = await stack.enter_async_context(stdio_client(params))
    client = await stack.enter_async_context(ClientSession(read, write))
    await client.initialize()
    await client.list_tools()
    return client


async def timed_block(client: ClientSession, n: int, sink: list[float]) -> None:
    for _ in range(n):
        start = time.perf_counter_ns()
        result = await client.call_tool("get_current_time", ARGS)
        sink.append((time.perf_counter_ns() - start) / 1e6)
        if result.is_error:
            raise RuntimeError(f"tool call failed: {result.content}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(calls: int, block: int, guard: bool, home: Path) -> None:
    env = {**os.environ, "SPANGUARD_HOME": str(home)}
    wrap: list[str] = [sys.executable, "-m", "spanguard", "mcp", "wrap"]
    if guard:
        policy = home / "policy.toml"
        policy.write_text(POLICY)
        wrap += ["--policy", str(policy)]
    wrap += ["--", *TIME_SERVER]
    direct: list[float] = []
    proxied: list[float] = []
    async with AsyncExitStack() as stack:
        direct_client = await open_session(stack, TIME_SERVER, env)
        proxied_client = await open_session(stack, wrap, env)
        await timed_block(direct_client, 50, [])
        await timed_block(proxied_client, 50, [])
        done = 0
        while done < calls:
            n = min(block, calls - done)
            await timed_block(direct_client, n, direct)
            await timed_block(proxied_client, n, proxied)
            done += n
    report(calls, block, guard, direct, proxied)


def report(calls: int, block: int, guard: bool, direct: list[float],
           proxied: list[float]) -> None:
    d50, p50 = statistics.median(direct), statistics.median(proxied)
    d99, p99 = percentile(direct, 0.99), percentile(proxied, 0.99)
    print(f"mcp proxy latency: {calls} tools/call get_current_time each way, "
          f"alternating blocks of {block}; proxy: tracing on, guards "
          f"{'on (holds, tool_loop, loop_budget)' if guard else 'off'}")
    print(f"{'':10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'direct':10}{d50:10.3f}{d99:10.3f}")
    print(f"{'proxied':10}{p50:10.3f}{p99:10.3f}")
    print(f"ratio p50 {p50 / d50:.3f} (+{(p50 - d50):.3f} ms, {100 * (p50 / d50 - 1):+.1f}%); "
          f"ratio p99 {p99 / d99:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--no-guard", action="store_true",
                        help="proxy with tracing only (no policy)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spanguard-bench-") as home:
        asyncio.run(run(args.calls, args.block, not args.no_guard, Path(home)))


if __name__ == "__main__":
    main()
