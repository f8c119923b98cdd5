"""Redaction results remembered by text, so text met again is not scanned again.

With content capture on, one message's text reaches the exporter several times in
a run: as OpenInference's ``llm.input_messages.N.message.content``, inside the
GenAI JSON of the same span, and (a tool's result) on the tool's span as
``gen_ai.tool.call.result`` and ``output.value``. Redaction is a pure function of
the text, so the exporter redacts it once and looks it up after that. The memo
lives where redaction runs, on the exporters' threads, never on the agent's; it
is shared by every destination of one redactor (the local store and OTLP redact
a message once between them), hence the lock.

Bounded by the characters it holds (originals plus results), least recently used
evicted first: the default 8 M characters keep every message of a few hundred
concurrent long runs, so a message is redacted once per run in practice; past it,
an evicted text is simply redacted again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["RedactionMemo"]

DEFAULT_MAX_CHARS = 8_000_000


class RedactionMemo:
    """text -> (redacted text, replacements), least recently used evicted first."""

    __slots__ = ("_chars", "_entries", "_lock", "hits", "max_chars", "misses")

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if max_chars < 0:
            raise ValueError("max_chars must be >= 0")
        self.max_chars = max_chars
        self._entries: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, text: str) -> tuple[str, int] | None:
        with self._lock:
            found = self._entries.get(text)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(text)
            self.hits += 1
            return found

    def put(self, text: str, result: tuple[str, int]) -> None:
        size = len(text) + len(result[0])
        if size > self.max_chars:
            return
        with self._lock:
            entries = self._entries
            if text in entries:
                return
            entries[text] = result
            self._chars += size
            while self._chars > self.max_chars:
                old, (redacted, _) = entries.popitem(last=False)
                self._chars -= len(old) + len(redacted)
