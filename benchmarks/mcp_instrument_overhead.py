"""What ``instrument_server`` adds to an in-process ``tools/call``.

Three identical ``MCPServer``s, each behind a real ``ClientSession`` over the
SDK's in-memory JSON-RPC transport, all tracing into one global SDK provider
(batch export to memory), so the SDK's own span is on in every variant:

- ``sdk``: the SDK alone (its OpenTelemetry middleware),
- ``spanguard``: plus ``instrument_server`` (span enrichment, no policy),
- ``guarded``: plus a policy with one allow-everything guard (RunState, ToolCall,
  annotations, before/after hooks).

Calls alternate between the variants in blocks, so machine noise hits all of
them alike. Prints p50/p99 per call and the ratios to ``sdk``.

    python benchmarks/mcp_instrument_overhead.py [--calls 2000] [--block 100]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
from mcp import ClientSession
from mcp.client._memory import InMemoryTransport
from mcp.server.mcpserver import MCPServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanguard.guardrails import Guard, Policy
from spanguard.mcp_bridge import instrument_server


class AllowAll(Guard):
    name = "allow_all"


def build() -> MCPServer:
    server = MCPServer("bench")

    @server.tool()
    def echo(text: str) -> str:
        return text

    return server


async def run(calls: int, block: int) -> dict[str, list[float]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    servers: dict[str, MCPServer] = {name: build() for name in ("sdk", "spanguard", "guarded")}
    instrument_server(servers["spanguard"], tracer_provider=provider)
    instrument_server(servers["guarded"], Policy(guards=(AllowAll(),)), tracer_provider=provider)

    timings: dict[str, list[float]] = {name: [] for name in servers}
    async with AsyncExitStack() as stack:
        sessions: dict[str, ClientSession] = {}
        for name, server in servers.items():
            read, write = await stack.enter_async_context(InMemoryTransport(server))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            await session.list_tools()
            for _ in range(50):  # warm-up
                await session.call_tool("echo", {"text": "warm"})
            sessions[name] = session
        args: dict[str, Any] = {"text": "hello"}
        done = 0
        while done < calls:
            for name, session in sessions.items():
                for _ in range(block):
                    start = time.perf_counter()
                    await session.call_tool("echo", args)
                    timings[name].append((time.perf_counter() - start) * 1000)
                exporter.clear()
            done += block
    provider.shutdown()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--block", type=int, default=100)
    opts = parser.parse_args()
    timings = anyio.run(run, opts.calls, opts.block)
    base = statistics.quantiles(timings["sdk"], n=100)
    print(f"{opts.calls} tools/call per variant, in memory, alternating blocks of {opts.block}")
    for name, values in timings.items():
        q = statistics.quantiles(values, n=100)
        print(f"{name:>10}: p50 {q[49]:.3f} ms  p99 {q[98]:.3f} ms  "
              f"(p50 x{q[49] / base[49]:.3f}, p99 x{q[98] / base[98]:.3f} vs sdk)")


if __name__ == "__main__":
    main()
