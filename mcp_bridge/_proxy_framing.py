"""Newline-delimited JSON-RPC framing over asyncio streams, with a hard size cap.

The MCP stdio transport frames each message as one line of UTF-8 JSON. A peer
that sends a line longer than the cap must not make the proxy buffer it: the
reader discards such a line in ``limit``-sized pieces (memory stays bounded by
the ``StreamReader`` limit) and reports it as :class:`Oversized`, keeping the
first bytes so the caller can still find the request id and answer it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024

# How much of an oversized line is kept to find its id ("id" precedes "params"
# in every serializer seen in practice; if it does not, the answer has id null).
_HEAD_BYTES = 4096
_ID_PATTERN = re.compile(rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.){0,256}")')


@dataclass(frozen=True, slots=True)
class Oversized:
    """A line that exceeded the cap: its size (as far as it was read) and its head."""

    size: int
    head: bytes

    def request_id(self) -> int | str | None:
        """The JSON-RPC id found in the head, if any (best effort, never raises)."""
        match = _ID_PATTERN.search(self.head)
        if match is None:
            return None
        raw = match.group(1)
        if raw.startswith(b'"'):
            return raw[1:-1].decode("utf-8", "replace")
        return int(raw)


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | Oversized | None:
    """The next line (without its newline), an :class:`Oversized` marker, or None at EOF.

    ``limit`` must equal the reader's own limit: ``readuntil`` raises
    ``LimitOverrunError`` once that many bytes are buffered without a newline.
    """
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        # EOF: a final line without a newline is still a message.
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        return await _discard_line(reader, exc.consumed, limit)
    return line[:-1]


async def _discard_line(reader: asyncio.StreamReader, consumed: int, limit: int) -> Oversized:
    head = b""
    size = 0
    while True:
        chunk = await reader.read(max(consumed, 1))
        if not head:
            head = chunk[:_HEAD_BYTES]
        size += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return Oversized(size, head)
        try:
            rest = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return Oversized(size + len(exc.partial), head)
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed
            continue
        size += len(rest)
        return Oversized(size, head)
