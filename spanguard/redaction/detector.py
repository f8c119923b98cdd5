"""What a detector is: a cheap candidate pattern, then a check that rejects look-alikes.

A regular expression alone cannot tell a card number from an order id or a
phone number from a timestamp; the format's own rules can (Luhn, mod-97,
libphonenumber's numbering plans). So every detector is a pattern that finds
*candidates* quickly, plus either ``validate`` (keep or drop the match) or
``locate`` (find the valid parts inside a longer candidate, e.g. the IBAN at
the start of "DE89 3704 0044 0532 0130 00 please").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from spanguard.errors import ConfigError

__all__ = ["Detector", "Span", "compile_patterns", "placeholder"]

Span = tuple[int, int]


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive text.

    ``hint``: lower-case substrings of which at least one must occur in the
    lower-cased text, else the pattern is not run; ``digits``: only text with a
    decimal digit can match. Both are pre-checks that keep the common case
    (text without any candidate) cheap. ``group`` names the part of the match
    that is sensitive (``password=`` stays readable, the value goes).
    """

    kind: str
    pattern: re.Pattern[str]
    validate: Callable[[re.Match[str]], bool] | None = None
    hint: tuple[str, ...] = ()
    digits: bool = False
    group: int | str = 0
    locate: Callable[[re.Match[str]], Iterable[Span]] | None = None

    def spans(self, text: str) -> Iterator[Span]:
        """The (start, end) of every sensitive match in ``text``."""
        validate, locate, group = self.validate, self.locate, self.group
        for match in self.pattern.finditer(text):
            if locate is not None:
                yield from locate(match)
            elif validate is None or validate(match):
                start, end = match.span(group)
                if start < end:
                    yield start, end


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def compile_patterns(patterns: Mapping[str, Any], source: str) -> list[Detector]:
    """User patterns (name -> regex) as detectors; a bad one is a :class:`ConfigError`."""
    detectors = []
    for name, regex in patterns.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(source, f"pattern name {name!r} is not usable",
                              "use letters, digits, '_', '.', '-' (it becomes "
                              "[REDACTED:name])")
        if not isinstance(regex, str) or not regex:
            raise ConfigError(source, f"pattern {name!r} must be a non-empty string")
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise ConfigError(source, f"pattern {name!r} does not compile: {exc}") from exc
        if compiled.search("") is not None:
            raise ConfigError(source, f"pattern {name!r} matches the empty string",
                              "it would redact between every character")
        detectors.append(Detector(name, compiled))
    return detectors
