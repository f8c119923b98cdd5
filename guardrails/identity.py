"""Identities as a person reads them, so that ``bоt`` (Cyrillic о) is ``bot``.

Maker-checker rests on "a different identity approves". Names that look the
same to a reviewer must therefore compare equal, and names that hide characters
must not be accepted at all:

* :func:`identity_problem` refuses empty names and any invisible or control
  character (default-ignorable code points such as U+200B ZERO WIDTH SPACE or
  U+00AD SOFT HYPHEN, C0/C1 controls, format characters such as bidi overrides,
  private-use, surrogate and unassigned code points, line/paragraph separators).
* :func:`identity_key` folds what remains: NFKC (fullwidth ``ｂｏｔ`` and
  mathematical ``𝐛𝐨𝐭`` are ``bot``; NFD and NFC forms are one), case folding,
  runs of spaces collapsed, then the Unicode TR39 confusable *skeleton*
  (Cyrillic ``о`` and Greek ``ο`` are Latin ``o``).

The skeleton is ICU's ``SpoofChecker.getSkeleton`` (the Unicode consortium's own
implementation of TR39, with its confusables data) through PyICU; nothing here
carries a table of its own. TR39 folds more than most people expect (``rn`` and
``m`` share a skeleton): two genuinely different names that fold together are
refused as the same person, which is the safe mistake for maker-checker.

With signed approvals the checker is the reviewer key, not a typed name
(:mod:`~spanguard.guardrails.reviewers`); these rules still compare the key's
reviewer name with the maker, and validate every name a policy lists.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

# Default_Ignorable_Code_Point covers zero-width characters, soft hyphen, variation
# selectors, the combining grapheme joiner and Hangul fillers; the categories add
# controls (Cc), format characters (Cf: bidi overrides, ...), surrogates (Cs),
# private use (Co), unassigned (Cn) and the line/paragraph separators (Zl, Zp).
_REFUSED_SET = ("[[:Default_Ignorable_Code_Point:][:Cc:][:Cf:][:Cs:][:Co:][:Cn:]"
                "[:Zl:][:Zp:]]")


@functools.cache
def _icu() -> tuple[Any, Any]:
    """The frozen refused-character set and the spoof checker, built once.

    Both are read-only after construction, which ICU documents as safe to share
    between threads.
    """
    import icu  # PyICU; deferred: only a held call or a decision needs it

    refused = icu.UnicodeSet(_REFUSED_SET)
    refused.freeze()
    return refused, icu.SpoofChecker()


def identity_problem(name: object) -> str | None:
    """Why ``name`` cannot be an identity (maker, checker, reviewer), or None."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name.strip():
        return "is empty"
    if name.isascii() and name.isprintable():
        return None  # the common case: plain ASCII has nothing invisible
    refused, _ = _icu()
    for char in name:
        if refused.contains(char):
            label = unicodedata.name(char, "unnamed")
            return (f"contains the invisible or control character U+{ord(char):04X} "
                    f"({label}); type the name without it")
    return None


@functools.lru_cache(maxsize=1024)
def identity_key(name: str) -> str:
    """What two names must share to be one identity (for comparison only, never shown)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    collapsed = " ".join(folded.split())
    _, checker = _icu()
    skeleton: str = checker.getSkeleton(0, collapsed)
    return skeleton


def same_identity(a: str, b: str) -> bool:
    """True when a reviewer could take ``a`` and ``b`` for the same name."""
    return a == b or identity_key(a) == identity_key(b)
