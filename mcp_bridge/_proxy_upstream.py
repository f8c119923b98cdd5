"""The wrapped MCP server: one child process, started, written to, and stopped cleanly.

Stopping follows the MCP stdio transport's shutdown sequence: close the child's
stdin, wait, SIGTERM, wait, SIGKILL. The child inherits the proxy's stderr, so
its logs reach whoever reads the proxy's logs; its stdout is the protocol pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shlex
import signal
from collections.abc import Sequence

from spanguard.errors import ConfigError

logger = logging.getLogger("spanguard.mcp_bridge.proxy")

STOP_GRACE_SECONDS = 2.0


class Upstream:
    """One run of the wrapped server's process; make a new one to restart it."""

    def __init__(self, command: Sequence[str], limit: int) -> None:
        if not command:
            raise ConfigError("mcp wrap", "no server command given",
                              "put the server's command after `--`: "
                              "spanguard mcp wrap -- CMD ARGS...")
        self.command = list(command)
        self._limit = limit
        self._process: asyncio.subprocess.Process | None = None

    @property
    def display(self) -> str:
        return shlex.join(self.command)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self._process is not None and self._process.stdout is not None
        return self._process.stdout

    async def start(self) -> None:
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, limit=self._limit)
        except OSError as exc:
            raise ConfigError("mcp wrap", f"cannot start {self.display}: "
                              f"{exc.strerror or exc}",
                              "check the command after `--` and its PATH") from exc
        logger.debug("started upstream %s (pid %s)", self.display, self._process.pid)

    async def write(self, frame: bytes) -> bool:
        """Send one frame; False if the child's stdin is gone (it exited)."""
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return False
        try:
            process.stdin.write(frame)
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Close stdin, then SIGTERM, then SIGKILL; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        for step in (None, signal.SIGTERM, signal.SIGKILL):
            if step is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(step)
            try:
                return await asyncio.wait_for(process.wait(), grace)
            except asyncio.TimeoutError:
                continue
        return process.returncode


def command_identity(command: Sequence[str]) -> str:
    """The server identity approvals are bound to when ``--name`` gives none.

    A hash of the command line, not the command itself: arguments may carry
    tokens, and the identity is shown to checkers and stored with every hold.
    The same command line is the same server; any other is another.
    """
    digest = hashlib.sha256(json.dumps(list(command)).encode("utf-8")).hexdigest()
    return f"cmd:{digest[:16]}"


def describe_exit(display: str, returncode: int) -> str:
    """A cause a person can act on: which command ended, and how."""
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    return f"upstream MCP server `{display}` {how}"
