"""Newline-delimited JSON-RPC framing over asyncio streams, with a hard size cap.

The MCP stdio transport frames each message as one line of UTF-8 JSON. A peer
that sends a line longer than the cap must not make the proxy buffer it: the
reader discards the rest of such a line chunk by chunk as it arrives (memory
stays bounded by the cap plus one chunk) and reports it as :class:`Oversized`,
keeping the first bytes so the caller can still find the request id and answer.
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
                    oversized = Oversized(end, bytes(buffer[:_HEAD_BYTES]))
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
                    return Oversized(len(line), line[:_HEAD_BYTES])
                return line
            buffer += chunk

    async def _discard(self) -> Oversized:
        buffer = self._buffer
        head = bytes(buffer[:_HEAD_BYTES])
        size = len(buffer)
        buffer.clear()
        self._scanned = 0
        while True:
            chunk = await self._reader.read(CHUNK_BYTES)
            if not chunk:
                return Oversized(size, head)
            end = chunk.find(b"\n")
            if end >= 0:
                buffer += chunk[end + 1:]
                return Oversized(size + end, head)
            size += len(chunk)
