"""``spanguard mcp wrap --preset``: the proxy exports like ``configure(preset=...)``,
with the same environment variables, to a real OTLP receiver on loopback."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.otlp_receiver import otlp_receiver

TIME_SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]


async def _one_call(env: dict[str, str], *options: str) -> None:
    command = [sys.executable, "-m", "spanguard", "mcp", "wrap", *options, "--", *TIME_SERVER]
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("get_current_time", {"timezone": "UTC"})
        assert not result.is_error, result


async def test_langfuse_preset_reads_the_langfuse_variables(spanguard_home: Path) -> None:
    with otlp_receiver() as receiver:
        env = dict(os.environ, LANGFUSE_HOST=receiver.endpoint,
                   LANGFUSE_PUBLIC_KEY="pk-lf-proxy", LANGFUSE_SECRET_KEY="sk-lf-proxy")
        await _one_call(env, "--preset", "langfuse")
    assert set(receiver.requests) == {"/api/public/otel/v1/traces"}
    tokens = {headers["authorization"] for headers in receiver.headers}
    expected = base64.b64encode(b"pk-lf-proxy:sk-lf-proxy").decode()
    assert tokens == {f"Basic {expected}"}
    call = receiver.span_named("tools/call get_current_time")
    assert call["attributes"]["openinference.span.kind"] == "TOOL"


async def test_phoenix_preset_reads_the_collector_endpoint(spanguard_home: Path) -> None:
    with otlp_receiver() as receiver:
        env = dict(os.environ, PHOENIX_COLLECTOR_ENDPOINT=receiver.endpoint)
        await _one_call(env, "--preset", "phoenix")
    assert set(receiver.requests) == {"/v1/traces"}
    assert receiver.span_named("tools/call get_current_time")["name"]


async def test_langfuse_preset_without_keys_warns_and_still_serves(spanguard_home: Path) -> None:
    """Telemetry fails open: the proxy serves its client and says what is missing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
    errors = spanguard_home.parent / "stderr.txt"
    with errors.open("w") as sink:
        command = [sys.executable, "-m", "spanguard", "mcp", "wrap", "--preset", "langfuse",
                   "--", *TIME_SERVER]
        params = StdioServerParameters(command=command[0], args=command[1:], env=env)
        async with stdio_client(params, errlog=sink) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            assert not (await session.call_tool("get_current_time",
                                                {"timezone": "UTC"})).is_error
    assert "LANGFUSE_PUBLIC_KEY" in errors.read_text()


def test_an_unknown_preset_is_a_usage_error() -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "spanguard", "mcp", "wrap", "--preset",
                           "jaeger", "--", "true"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert "invalid choice: 'jaeger'" in done.stderr
