"""Newline-delimited JSON-RPC framing over asyncio streams, with a hard size cap.

The MCP stdio transport frames each message as one line of UTF-8 JSON. A peer
that sends a line longer than the cap must not make the proxy buffer it: the
reader discards the rest of such a line chunk by chunk as it arrives (memory
stays bounded by the cap plus one chunk) and reports it as :class:`Oversized`,
keeping its first and last bytes so the caller can still find the request id
(serializers put it first, or, like the TypeScript SDK, last) and answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from spanguard.mcp_bridge._proxy_splice import tail_id, top_level_id

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024

# How much of each end of an oversized line is kept to find its id.
_END_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Oversized:
    """A line that exceeded the cap: its size (as far as it was read) and its two ends."""

    size: int
    head: bytes
    tail: bytes = b""

    def request_id(self) -> int | str | None:
        """The top-level JSON-RPC id, from the members before the cut or the last
        member (best effort, never raises)."""
        found = top_level_id(self.head)
        return found if found is not None else tail_id(self.tail)


# Bytes asked of the stream per read; also the stream's own limit, so the
# asyncio buffer below the framer stays around this size (it pauses at 2x).
CHUNK_BYTES = 256 * 1024


class FrameReader:
    """Splits a byte stream into lines, holding at most ``limit + CHUNK_BYTES`` bytes.

    The framing is done here rather than with ``StreamReader.readuntil``: that
    one keeps up to twice its limit buffered and copies it again to discard it,
    so a hostile peer could make the proxy hold several times the cap.
    """

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self._limit = limit
        self._buffer = bytearray()
        self._scanned = 0

    async def next(self) -> bytes | Oversized | None:
        """The next line (without its newline), an :class:`Oversized` marker, or None at EOF."""
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n", self._scanned)
            if end >= 0:
                self._scanned = 0
                if end > self._limit:
                    oversized = Oversized(end, bytes(buffer[:_END_BYTES]),
                                          bytes(buffer[max(0, end - _END_BYTES):end]))
                    del buffer[:end + 1]
                    return oversized
                line = bytes(buffer[:end])
                del buffer[:end + 1]
                return line
            self._scanned = len(buffer)
            if len(buffer) > self._limit:
                return await self._discard()
            chunk = await self._reader.read(CHUNK_BYTES)
            if not chunk:
                # EOF: a final line without a newline is still a message.
                self._scanned = 0
                if not buffer:
                    return None
                line = bytes(buffer)
                buffer.clear()
                if len(line) > self._limit:
                    return Oversized(len(line), line[:_END_BYTES], line[-_END_BYTES:])
                return line
            buffer += chunk

    async def _discard(self) -> Oversized:
        buffer = self._buffer
        head = bytes(buffer[:_END_BYTES])
        tail = bytes(buffer[-_END_BYTES:])
        size = len(buffer)
        buffer.clear()
        self._scanned = 0
        while True:
            chunk = await self._reader.read(CHUNK_BYTES)
            if not chunk:
                return Oversized(size, head, tail)
            end = chunk.find(b"\n")
            if end >= 0:
                buffer += chunk[end + 1:]
                tail = (tail + chunk[:end])[-_END_BYTES:]
                return Oversized(size + end, head, tail)
            tail = (tail + chunk)[-_END_BYTES:]
            size += len(chunk)
