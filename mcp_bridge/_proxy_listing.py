"""The upstream's tool annotations, listed by the proxy itself when a call needs them.

A client may call a tool it never listed; a policy keyed on ``destructiveHint``
must still see the hint, so the proxy asks the server. Only calls that need the
answer wait for it, they share one listing, and a listing that failed (no
answer within the proxy's upstream deadline, or an error) is not repeated on
every call: a ``notifications/tools/list_changed`` or a fresh ``tools/list``
answer (the client's own, passing by) starts over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from spanguard.mcp_bridge.annotations import ToolAnnotations

__all__ = ["ListingFailed", "ToolListing"]

logger = logging.getLogger("spanguard.mcp_bridge.proxy")

_MAX_PAGES = 100

OwnRequest = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class ListingFailed(Exception):
    """The server could not be asked, or did not list its tools."""


class ToolListing:
    """What the server said about its tools, and the one listing in progress."""

    def __init__(self, tools: ToolAnnotations, request: OwnRequest, spawn: Spawn) -> None:
        self.tools = tools
        self._request = request
        self._spawn = spawn
        self._complete = False  # a listing without nextCursor passed by
        self._failed = False
        self._listing: asyncio.Task[None] | None = None

    def observe(self, result: Mapping[str, Any]) -> None:
        """A ``tools/list`` answer (the client's or the proxy's own)."""
        self.tools.observe(result)
        if result.get("nextCursor") is None:
            self._complete = True

    def changed(self) -> None:
        """The server's tools changed, or it was restarted: list again when needed."""
        self._complete = self._failed = False

    def pending(self, tool: str) -> bool:
        """Whether the server must be asked before a call of ``tool`` is judged."""
        return self.tools.get(tool) is None and not self._complete and not self._failed

    async def annotations(self, tool: str) -> Mapping[str, Any] | None:
        """The tool's annotations, listing the server's tools first if they are unknown."""
        if self.pending(tool):
            if self._listing is None or self._listing.done():
                self._listing = self._spawn(self._list())
            await asyncio.shield(self._listing)
        return self.tools.get(tool)

    async def _list(self) -> None:
        cursor: str | None = None
        try:
            for _ in range(_MAX_PAGES):
                response = await self._request("tools/list",
                                               {"cursor": cursor} if cursor else {})
                result = response.get("result")
                if not isinstance(result, dict):
                    raise ListingFailed(f"tools/list answered {response.get('error')!r}")
                self.observe(result)
                cursor = result.get("nextCursor")
                if not isinstance(cursor, str):
                    return
        except Exception as exc:  # no answer in time, the server gone, an error answer
            self._failed = True
            logger.warning("could not list the upstream's tools for their annotations "
                           "(%s); a tool it has not listed is judged as one without hints",
                           str(exc) or type(exc).__name__)
