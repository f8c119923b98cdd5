"""The redactor: every detector finds spans in the original text, then one rewrite.

Detectors run in a fixed order (secrets, addresses, checksummed numbers,
IPs, phones, then an optional entity recognizer, then the user's patterns).
Each finds spans on the *original* text; a span that overlaps one already
taken is merged into it under the earlier detector's kind, so a key is named
for what it is and no sensitive fragment survives a partial overlap
(over-redaction is the safe failure). The text is rebuilt once.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from spanguard import semconv as sc
from spanguard.redaction.addresses import EMAIL, IP_DETECTORS
from spanguard.redaction.content import is_content_key
from spanguard.redaction.credentials import SECRET_DETECTORS
from spanguard.redaction.detector import Detector, compile_patterns, placeholder
from spanguard.redaction.memo import RedactionMemo
from spanguard.redaction.messages import redact_messages_json
from spanguard.redaction.numbers import NUMBER_DETECTORS
from spanguard.redaction.phones import phone_detector

__all__ = ["DEFAULT_DETECTORS", "EntityRecognizer", "Redactor", "default_detectors"]


class EntityRecognizer(Protocol):
    """A finder beyond the built-in detectors: :mod:`.detect_secrets_rules`, :mod:`.ner`."""

    def find(self, text: str) -> Iterable[tuple[int, int, str]]:
        """(start, end, kind) of every entity found."""
        ...


def default_detectors(phone_regions: Sequence[str] | None = None) -> tuple[Detector, ...]:
    """The built-in detectors, in priority order; ``phone_regions`` as in :mod:`.phones`."""
    return (*SECRET_DETECTORS, EMAIL, *NUMBER_DETECTORS, *IP_DETECTORS,
            phone_detector(phone_regions))


DEFAULT_DETECTORS: tuple[Detector, ...] = default_detectors()
_DIGIT = re.compile(r"\d")
# Attributes holding GenAI JSON message lists: redacted piece by piece (.messages).
_MESSAGE_LISTS = frozenset({sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_OUTPUT_MESSAGES,
                            sc.GEN_AI_SYSTEM_INSTRUCTIONS})


class Redactor:
    """Replaces sensitive text with typed placeholders and counts what it replaced.

    Thread-safe: detectors are immutable; only the running totals and the memo
    take a lock. ``recognizers`` (detect-secrets' rules, a NER model) run after the
    built-in detectors, and ``patterns`` (name -> regex) last; ``detectors``
    replaces the built-in set. :meth:`redact_attributes` (the exporters' path)
    remembers each text's result in ``memo`` (:mod:`.memo`), so a message met
    again is not scanned again; :meth:`redact` always scans.
    """

    def __init__(self, patterns: Mapping[str, str] | None = None,
                 detectors: Sequence[Detector] | None = None, *,
                 phone_regions: Sequence[str] | None = None,
                 recognizers: Sequence[EntityRecognizer] = ()) -> None:
        extra = compile_patterns(patterns or {}, "redaction patterns")
        builtin = default_detectors(phone_regions) if detectors is None else tuple(detectors)
        self.detectors: tuple[Detector, ...] = (*builtin, *extra)
        self._builtin_count = len(builtin)
        self.recognizers: tuple[EntityRecognizer, ...] = tuple(recognizers)
        self.totals: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.memo = RedactionMemo()

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Sorted, non-overlapping (start, end, kind) of everything to redact."""
        taken: list[list[Any]] = []
        lowered = text.lower()
        has_digit = _DIGIT.search(text) is not None
        builtin = self._builtin_count
        for detector in self.detectors[:builtin]:
            _run(detector, text, lowered, has_digit, taken)
        for recognizer in self.recognizers:
            for start, end, kind in recognizer.find(text):
                _take(taken, start, end, kind)
        for detector in self.detectors[builtin:]:
            _run(detector, text, lowered, has_digit, taken)
        taken.sort()
        return [(start, end, kind) for start, end, kind in taken]

    def redact(self, text: str) -> tuple[str, int]:
        """The redacted text and the number of replacements."""
        spans = self.find(text)
        if not spans:
            return text, 0
        pieces = []
        position = 0
        counts: Counter[str] = Counter()
        for start, end, kind in spans:
            pieces.append(text[position:start])
            pieces.append(placeholder(kind))
            position = end
            counts[kind] += 1
        pieces.append(text[position:])
        with self._lock:
            self.totals.update(counts)
        return "".join(pieces), len(spans)

    def redact_cached(self, text: str) -> tuple[str, int]:
        """:meth:`redact` through the memo: a text seen before is not scanned again."""
        found = self.memo.get(text)
        if found is None:
            found = self.redact(text)
            self.memo.put(text, found)
        return found

    def redact_value(self, value: Any) -> tuple[Any, int]:
        """A str, or a sequence of str (OTel array attribute), redacted; other types as is."""
        if isinstance(value, str):
            return self.redact_cached(value)
        if isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
            total = 0
            out = []
            for item in value:
                if isinstance(item, str):
                    item, count = self.redact_cached(item)
                    total += count
                out.append(item)
            return tuple(out), total
        return value, 0

    def redact_attributes(self, attributes: Mapping[str, Any] | None,
                          keys: Callable[[str], bool] = is_content_key
                          ) -> tuple[dict[str, Any], int] | None:
        """Content attributes redacted, or None when there is no content attribute.

        GenAI message lists are redacted piece by piece (:mod:`.messages`), so their
        texts share the memo with the flattened OpenInference keys holding the same.
        """
        if not attributes:
            return None
        content = [key for key in attributes if keys(key)]
        if not content:
            return None
        out = dict(attributes)
        total = 0
        for key in content:
            value = attributes[key]
            pieces = (redact_messages_json(value, self.redact_cached)
                      if key in _MESSAGE_LISTS and isinstance(value, str) else None)
            out[key], count = pieces if pieces is not None else self.redact_value(value)
            total += count
        return out, total


def _run(detector: Detector, text: str, lowered: str, has_digit: bool,
         taken: list[list[Any]]) -> None:
    if detector.hint and not any(h in lowered for h in detector.hint):
        return
    if detector.digits and not has_digit:
        return
    for start, end in detector.spans(text):
        _take(taken, start, end, detector.kind)


def _take(taken: list[list[Any]], start: int, end: int, kind: str) -> None:
    """Add a span, merging it with any it overlaps (the earliest detector's kind wins)."""
    if start >= end:
        return
    overlapping = [span for span in taken if span[0] < end and start < span[1]]
    if not overlapping:
        taken.append([start, end, kind])
        return
    first = overlapping[0]
    first[0] = min(start, *(span[0] for span in overlapping))
    first[1] = max(end, *(span[1] for span in overlapping))
    for span in overlapping[1:]:
        taken.remove(span)
