"""Read and edit a JSON-RPC frame's outer structure without decoding or re-encoding the rest.

The proxy must add its trace context to ``params._meta`` of every request it
forwards. Parsing the frame and serializing it again would rewrite what the
client sent (an integer above 2^64 becomes a float, a document nested deeper
than the encoder's limit cannot be written at all), so the proxy splices
instead: it finds the byte spans of ``params`` and ``params._meta`` and inserts
or replaces only the ``_meta`` entries it sets. Every other byte reaches the
server as the client wrote it.

The scanner walks members of an object and elements of an array, skipping each
value whole (strings with one regular expression, containers by counting
brackets outside strings), so its cost does not depend on how deep a value is
nested and it never recurses. It expects JSON that a strict parser accepted
(except where noted: :func:`top_level_id` and :func:`deeper_than` also read
frames that did not parse, best effort); structure it does not expect raises
:class:`Malformed`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "Malformed",
    "Member",
    "array_elements",
    "deeper_than",
    "inject_meta",
    "object_members",
    "tail_id",
    "top_level_id",
]

_WS = re.compile(rb"[ \t\n\r]*")
# Unrolled so a long string is one fast scan, not one regex step per character.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")
_QUOTE = ord('"')
# The last member of an object, when it is the id (TypeScript's SDK writes the id
# last): `"id": 5}` at the very end, possibly followed by string members.
_TAIL_ID = re.compile(
    rb'"id"\s*:\s*(-?[0-9]{1,20}|"[^"\\]{0,256}")\s*'
    rb'(?:,\s*"[a-z]+"\s*:\s*"[^"\\]{0,64}"\s*)*\}\s*$')


class Malformed(ValueError):
    """The bytes are not the JSON structure the scanner expected there."""


@dataclass(frozen=True, slots=True)
class Member:
    """One ``"key": value`` of an object, as byte offsets into the frame."""

    key: str
    start: int  # the key's opening quote
    value_start: int
    value_end: int


def _skip_ws(buf: bytes, pos: int) -> int:
    match = _WS.match(buf, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _value_end(buf: bytes, pos: int) -> int:
    """Where the value starting at ``pos`` ends (exclusive)."""
    if pos >= len(buf):
        raise Malformed("a value was expected")
    first = buf[pos]
    if first == _QUOTE:
        match = _STRING.match(buf, pos)
        if match is None:
            raise Malformed("unterminated string")
        return match.end()
    if first in _OPEN:
        depth = 0
        for token in _TOKEN.finditer(buf, pos):
            char = buf[token.start()]
            if char == _QUOTE:
                continue
            depth += 1 if char in _OPEN else -1
            if depth == 0:
                return token.end()
        raise Malformed("unterminated array or object")
    scalar = _SCALAR.match(buf, pos)
    if scalar is None or scalar.end() == pos:
        raise Malformed(f"unexpected byte {buf[pos:pos + 1]!r} at {pos}")
    return scalar.end()


def _key(buf: bytes, start: int, end: int) -> str:
    raw = buf[start + 1:end - 1]
    if b"\\" not in raw:
        return raw.decode("utf-8", "replace")
    try:
        decoded = json.loads(buf[start:end])
    except ValueError as exc:
        raise Malformed("bad key") from exc
    return str(decoded)


def object_members(buf: bytes, pos: int) -> Iterator[Member]:
    """The members of the object whose ``{`` is at ``pos``, lazily (a truncated frame
    yields the members before the cut, then raises :class:`Malformed`)."""
    if buf[pos:pos + 1] != b"{":
        raise Malformed("an object was expected")
    pos = _skip_ws(buf, pos + 1)
    if buf[pos:pos + 1] == b"}":
        return
    while True:
        key = _STRING.match(buf, pos)
        if key is None:
            raise Malformed("an object key was expected")
        colon = _skip_ws(buf, key.end())
        if buf[colon:colon + 1] != b":":
            raise Malformed("':' was expected")
        value_start = _skip_ws(buf, colon + 1)
        value_end = _value_end(buf, value_start)
        yield Member(_key(buf, key.start(), key.end()), key.start(), value_start, value_end)
        pos = _skip_ws(buf, value_end)
        separator = buf[pos:pos + 1]
        if separator == b"}":
            return
        if separator != b",":
            raise Malformed("',' or '}' was expected")
        pos = _skip_ws(buf, pos + 1)


def _object_end(buf: bytes, members: list[Member], open_at: int) -> int:
    """The offset of the closing ``}`` of an object whose members were all read."""
    after = members[-1].value_end if members else open_at + 1
    return _skip_ws(buf, after)


def array_elements(buf: bytes, pos: int = -1) -> list[tuple[int, int]]:
    """The byte spans of the elements of the array at ``pos`` (default: the frame's)."""
    if pos < 0:
        pos = _skip_ws(buf, 0)
    if buf[pos:pos + 1] != b"[":
        raise Malformed("an array was expected")
    spans: list[tuple[int, int]] = []
    pos = _skip_ws(buf, pos + 1)
    if buf[pos:pos + 1] == b"]":
        return spans
    while True:
        end = _value_end(buf, pos)
        spans.append((pos, end))
        pos = _skip_ws(buf, end)
        separator = buf[pos:pos + 1]
        if separator == b"]":
            return spans
        if separator != b",":
            raise Malformed("',' or ']' was expected")
        pos = _skip_ws(buf, pos + 1)


def _pair(key: str, value: str) -> bytes:
    return (json.dumps(key) + ":" + json.dumps(value)).encode()


def inject_meta(frame: bytes, entries: Mapping[str, str]) -> bytes:
    """``frame`` with ``entries`` set in ``params._meta``, every other byte as it was.

    No ``params``: one is appended holding only ``_meta``. No ``_meta``: it is
    inserted as the first member of ``params``. A ``_meta`` object keeps every
    member whose key is not in ``entries``, byte for byte. ``params`` or
    ``_meta`` that is not an object is left alone (nothing is injected).
    """
    if not entries:
        return frame
    ours = b",".join(_pair(key, value) for key, value in entries.items())
    top = _skip_ws(frame, 0)
    members = list(object_members(frame, top))
    params = next((m for m in members if m.key == "params"), None)
    if params is None:
        end = _object_end(frame, members, top)
        separator = b"," if members else b""
        return frame[:end] + separator + b'"params":{"_meta":{' + ours + b"}}" + frame[end:]
    if frame[params.value_start] != ord("{"):
        return frame
    inner = list(object_members(frame, params.value_start))
    meta = next((m for m in inner if m.key == "_meta"), None)
    if meta is None:
        at = params.value_start + 1
        separator = b"," if inner else b""
        return frame[:at] + b'"_meta":{' + ours + b"}" + separator + frame[at:]
    if frame[meta.value_start] != ord("{"):
        return frame
    kept = [frame[m.start:m.value_end] for m in object_members(frame, meta.value_start)
            if m.key not in entries]
    body = b",".join([ours, *kept])
    return frame[:meta.value_start] + b"{" + body + b"}" + frame[meta.value_end:]


def top_level_id(frame: bytes) -> int | str | None:
    """The top-level ``id`` of a frame, read without parsing anything nested.

    For frames a parser refused (nested too deep, cut off): every member before
    the first one that cannot be read is seen. None when there is no readable
    string or integer id.
    """
    try:
        top = _skip_ws(frame, 0)
        for member in object_members(frame, top):
            if member.key == "id":
                if member.value_end >= len(frame):  # a number the cut may have shortened
                    return None
                return _id_value(frame[member.value_start:member.value_end])
    except (Malformed, IndexError):
        pass
    return None


def tail_id(tail: bytes) -> int | str | None:
    """The id when it is the last member of a frame that was cut off before it."""
    match = _TAIL_ID.search(tail)
    return _id_value(match.group(1)) if match is not None else None


def _id_value(raw: bytes) -> int | str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def deeper_than(frame: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep (brackets in strings
    do not count); stops as soon as the answer is yes."""
    depth = 0
    for token in _TOKEN.finditer(frame):
        char = frame[token.start()]
        if char == _QUOTE:
            continue
        if char in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
