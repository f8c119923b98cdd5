"""Drive ``spanguard mcp wrap`` as a real subprocess over raw JSON-RPC lines.

The fault tests need what the SDK client hides: exact error frames, the proxy's
exit code, the upstream's pid, and frames the SDK would never send.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from spanguard.store import DB_NAME, StoredSpan, TraceStore

SERVERS = Path(__file__).resolve().parent / "servers"
RECORDER = [sys.executable, str(SERVERS / "recorder.py")]
SPEC = [sys.executable, str(SERVERS / "spec_server.py")]
GUARDED = [sys.executable, str(SERVERS / "guarded_wrap.py")]
SPANGUARD = [sys.executable, "-m", "spanguard"]
TIMEOUT = 20.0


class RawProxy:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.backlog: list[Any] = []

    @classmethod
    async def start(cls, server: list[str], *wrap_args: str, runner: list[str] = SPANGUARD,
                    limit: int = 64 * 1024 * 1024) -> RawProxy:
        process = await asyncio.create_subprocess_exec(
            *runner, "mcp", "wrap", *wrap_args, "--", *server,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ), limit=limit)
        return cls(process)

    async def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message).encode() + b"\n")

    async def recv_line(self, timeout: float = TIMEOUT) -> bytes:
        """The next frame exactly as the proxy wrote it (the backlog must be empty)."""
        assert not self.backlog
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert line, "the proxy closed stdout"
        return line

    async def recv(self) -> Any:
        """The next message: an object, or a list for a batch answer."""
        if self.backlog:
            return self.backlog.pop(0)
        return json.loads(await self.recv_line())

    async def response(self, request_id: object) -> dict[str, Any]:
        """The response to ``request_id``; other frames are kept for later ``recv``."""
        others: list[Any] = []
        try:
            while True:
                message = await self.recv()
                if isinstance(message, dict) and "method" not in message and \
                        message.get("id") == request_id:
                    return message
                others.append(message)
        finally:
            self.backlog[:0] = others

    async def request(self, request_id: object, method: str,
                      params: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await self.response(request_id)

    async def initialize(self) -> dict[str, Any]:
        response = await self.request(0, "initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}})
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response

    async def call(self, request_id: object, tool: str, **arguments: Any) -> dict[str, Any]:
        return await self.request(request_id, "tools/call",
                                  {"name": tool, "arguments": arguments})

    async def close(self) -> int:
        """Close the proxy's stdin (client disconnect) and wait for it to exit."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return await asyncio.wait_for(self.process.wait(), TIMEOUT)

    async def exited(self) -> int:
        return await asyncio.wait_for(self.process.wait(), TIMEOUT)


def recorded(log: Path) -> list[dict[str, Any]]:
    """Every frame the recorder server read, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def executed(log: Path) -> list[dict[str, Any]]:
    """What the spec server ran (see ``servers/spec_server.py``), in order."""
    return recorded(log)


def stored_spans(home: Path) -> list[StoredSpan]:
    store = TraceStore(home / DB_NAME)
    try:
        return store.spans()
    finally:
        store.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes only once reaped.
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line for line in status)
    except FileNotFoundError:
        return False
