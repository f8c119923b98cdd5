"""The proxy's JSON codec for the messages it judges: strict, exact, bounded.

A guard must judge what the server will execute, so a message the proxy gates
is read with no room for a second interpretation:

- **strict**: what orjson refuses (invalid UTF-8, lone surrogates, ``NaN``,
  numbers that overflow a double, a BOM, trailing bytes) is refused;
- **no duplicate keys**: parsers disagree on which of two ``"name"`` keys wins
  (orjson and Python keep the last, many others the first), so a frame with one
  could name a harmless tool to the guard and a held one to the server;
- **exact**: integers keep every digit (orjson turns those above 2^64 into
  floats, so two different amounts would hash alike), key order is kept;
- **bounded**: nesting deeper than :data:`MAX_DEPTH` is refused before anything
  recursive (the argument hash, the guards, the encoder) sees it.

:func:`loads` is the stdlib decoder with a duplicate check, run after orjson has
validated the bytes; :func:`dumps` is the stdlib encoder, which writes every
integer exactly and every float so that it reads back as the same float. Both
are used only off the hot path or on small messages: the frames the proxy
forwards are spliced (:mod:`._proxy_splice`), never re-encoded.
"""

from __future__ import annotations

import json
from typing import Any

from spanguard.extras import missing_extra

try:
    import orjson
except ModuleNotFoundError as exc:
    raise missing_extra("the MCP proxy", exc, "mcp") from exc

__all__ = [
    "MAX_DEPTH",
    "DuplicateKey",
    "TooDeep",
    "dumps",
    "loads",
    "nesting_exceeds",
    "validate",
]

MAX_DEPTH = 128
"""Deepest nesting of arrays and objects in a message the proxy gates or rewrites.

Far beyond any tool's arguments or result in practice (serde_json, the parser of
Rust MCP servers, stops at the same depth), and well inside what Python's
recursive decoder, encoder and hash can take."""


class DuplicateKey(ValueError):
    """An object names the same key twice."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"duplicate key {key[:64]!r} in an object")


class TooDeep(ValueError):
    """Arrays and objects nest deeper than the proxy's limit."""

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        self.limit = limit
        super().__init__(f"nested more than {limit} levels deep (the proxy's limit)")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_unique)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def validate(frame: bytes) -> Any:
    """orjson's reading of ``frame`` (``ValueError`` if it is not strict JSON)."""
    return orjson.loads(frame)


def loads(frame: bytes) -> Any:
    """The exact reading of a frame :func:`validate` accepted and whose nesting was checked.

    Raises :class:`DuplicateKey`; integers are Python ints, however long.
    """
    return _DECODER.decode(frame.decode("utf-8"))


def dumps(message: Any) -> bytes:
    """One frame, newline included; raises ``ValueError`` or ``TypeError`` if it cannot."""
    return _ENCODER.encode(message).encode("utf-8") + b"\n"


def nesting_exceeds(frame: bytes, value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (parsed from ``frame``) nests arrays and objects deeper than ``limit``.

    A frame with no more brackets than the limit cannot be deeper, which is
    every ordinary message: the walk (iterative, so any depth is safe) runs only
    for the rest.
    """
    if not isinstance(value, dict | list) or frame.count(b"{") + frame.count(b"[") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False
