"""Redaction results remembered by text, so text met again is not scanned again.

With content capture on, one message's text reaches the exporter several times in
a run: as OpenInference's ``llm.input_messages.N.message.content``, inside the
GenAI JSON of the same span, and (a tool's result) on the tool's span as
``gen_ai.tool.call.result`` and ``output.value``. Redaction is a pure function of
the text, so the exporter redacts it once and looks it up after that. The memo
lives where redaction runs, on the exporters' threads, never on the agent's; it
is shared by every destination of one redactor (the local store and OTLP redact
a message once between them), hence the lock.

Entries are keyed by a 128-bit BLAKE2b digest of the text, not by the text: the memo
holds redacted results only, never original content, so it keeps nothing in memory
that the exporter was asked to remove. Bounded by the characters of the results it
holds, least recently used evicted first: the default 4 M characters (4-16 MB) keep
every message of a few hundred concurrent long runs, so a message is redacted once
per run in practice; past it, an evicted text is simply redacted again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

__all__ = ["RedactionMemo"]

DEFAULT_MAX_CHARS = 4_000_000
_KEY_OVERHEAD = 16  # the digest, counted like characters


def _key(text: str) -> bytes:
    # surrogatepass: JSON-decoded text may hold lone surrogates; they hash like any code unit.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class RedactionMemo:
    """digest(text) -> (redacted text, replacements), least recently used evicted first."""

    __slots__ = ("_chars", "_entries", "_lock", "hits", "max_chars", "misses")

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if max_chars < 0:
            raise ValueError("max_chars must be >= 0")
        self.max_chars = max_chars
        self._entries: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, text: str) -> tuple[str, int] | None:
        key = _key(text)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, text: str, result: tuple[str, int]) -> None:
        size = _KEY_OVERHEAD + len(result[0])
        if size > self.max_chars:
            return
        key = _key(text)
        with self._lock:
            entries = self._entries
            if key in entries:
                return
            entries[key] = result
            self._chars += size
            while self._chars > self.max_chars:
                _, (redacted, _) = entries.popitem(last=False)
                self._chars -= _KEY_OVERHEAD + len(redacted)
