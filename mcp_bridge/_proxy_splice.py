"""Read and edit a JSON-RPC frame's outer structure without re-encoding the rest.

The proxy must add its trace context to ``params._meta`` of every request it
forwards. Parsing the frame and serializing it again would rewrite what the
client sent (an integer above 2^64 becomes a float, a document nested deeper
than the encoder's limit cannot be written at all), so the proxy splices
instead: it finds where ``params`` and ``params._meta`` are and inserts or
replaces only the ``_meta`` entries it sets. Every other byte reaches the
server as the client wrote it (UTF-8 decodes and encodes back byte for byte).

Members are walked one by one; each value is skipped whole by the stdlib's C
scanner (what ``json.loads`` runs on), or, for nesting deeper than it
recurses, by counting brackets outside strings. The scanner expects JSON that a
strict parser accepted, except :func:`top_level_id`, :func:`tail_id` and
:func:`deeper_than`, which also read frames that did not parse (best effort);
structure it does not expect raises :class:`Malformed`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

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

_WS = re.compile(r"[ \t\n\r]*")
_WS_CHARS = frozenset(" \t\n\r")
_DECODER = json.JSONDecoder()
# Strings whole (unrolled, so a long one is one fast scan) or one bracket.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_TOKEN_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")
_QUOTE = ord('"')
# The last member of an object, when it is the id (TypeScript's SDK writes the id
# last): `"id": 5}` at the very end, possibly followed by string members.
_TAIL_ID = re.compile(
    rb'"id"\s*:\s*(-?[0-9]{1,20}|"[^"\\]{0,256}")\s*'
    rb'(?:,\s*"[a-z]+"\s*:\s*"[^"\\]{0,64}"\s*)*\}\s*$')


_ABSENT = object()
# Top-level members that are plain strings or numbers, then `"params": {`: how every
# SDK writes a request, matched in one go (anything else is walked member by member).
_SCALAR_MEMBER = r'"[^"\\]*"\s*:\s*(?:"[^"\\]*"|-?[0-9]+)\s*,\s*'
_PARAMS_FIRST = re.compile(r'\s*\{\s*(?:' + _SCALAR_MEMBER + r')*"params"\s*:\s*\{')
_PLAIN = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII but '"' and '\\'


class Malformed(ValueError):
    """The text is not the JSON structure the scanner expected there."""


@dataclass(frozen=True, slots=True)
class Member:
    """One ``"key": value`` of an object, as offsets into the decoded frame."""

    key: str
    start: int  # the key's opening quote
    value_start: int
    value_end: int


def _skip_ws(text: str, pos: int) -> int:
    if text[pos:pos + 1] not in _WS_CHARS:  # compact JSON, the common case
        return pos
    match = _WS.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _scan(text: str, pos: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except ValueError as exc:
        raise Malformed(str(exc)) from exc


def _value_end(text: str, pos: int) -> int:
    """Where the value starting at ``pos`` ends (exclusive)."""
    try:
        return _scan(text, pos)[1]
    except RecursionError:  # deeper than the C scanner goes: count brackets instead
        depth = 0
        for token in _TOKEN_TEXT.finditer(text, pos):
            char = token.group()[0]
            if char == '"':
                continue
            depth += 1 if char in "[{" else -1
            if depth == 0:
                return token.end()
        raise Malformed("unterminated array or object") from None


def object_members(text: str, pos: int) -> Iterator[Member]:
    """The members of the object whose ``{`` is at ``pos``, lazily (a truncated frame
    yields the members before the cut, then raises :class:`Malformed`)."""
    if text[pos:pos + 1] != "{":
        raise Malformed("an object was expected")
    pos = _skip_ws(text, pos + 1)
    if text[pos:pos + 1] == "}":
        return
    while True:
        if text[pos:pos + 1] != '"':
            raise Malformed("an object key was expected")
        key, key_end = _scan(text, pos)
        colon = _skip_ws(text, key_end)
        if text[colon:colon + 1] != ":":
            raise Malformed("':' was expected")
        value_start = _skip_ws(text, colon + 1)
        value_end = _value_end(text, value_start)
        yield Member(key, pos, value_start, value_end)
        pos = _skip_ws(text, value_end)
        separator = text[pos:pos + 1]
        if separator == "}":
            return
        if separator != ",":
            raise Malformed("',' or '}' was expected")
        pos = _skip_ws(text, pos + 1)


def array_elements(frame: bytes) -> list[bytes]:
    """The elements of the array that is the whole frame, each as its own bytes."""
    text = frame.decode("utf-8")
    pos = _skip_ws(text, 0)
    if text[pos:pos + 1] != "[":
        raise Malformed("an array was expected")
    elements: list[bytes] = []
    pos = _skip_ws(text, pos + 1)
    if text[pos:pos + 1] == "]":
        return elements
    while True:
        end = _value_end(text, pos)
        elements.append(text[pos:end].encode("utf-8"))
        pos = _skip_ws(text, end)
        separator = text[pos:pos + 1]
        if separator == "]":
            return elements
        if separator != ",":
            raise Malformed("',' or ']' was expected")
        pos = _skip_ws(text, pos + 1)


def inject_meta(frame: bytes, entries: Mapping[str, str], message: Mapping[str, Any]) -> bytes:
    """``frame`` with ``entries`` set in ``params._meta``, every other byte as it was.

    ``message`` is the frame's exact reading (no duplicate keys: admission
    refused those), which says what is there, so only the members before
    ``params`` and before ``_meta`` are walked. No ``params``: one is appended
    holding only ``_meta``. No ``_meta``: it is inserted as the first member of
    ``params``. A ``_meta`` object keeps every member whose key is not in
    ``entries``, byte for byte. ``params`` or ``_meta`` that is not an object is
    left alone (nothing is injected).
    """
    if not entries:
        return frame
    ours = ",".join(f"{_string(key)}:{_string(value)}" for key, value in entries.items())
    text = frame.decode("utf-8")
    params = message.get("params", _ABSENT)
    if params is _ABSENT:
        end = len(text.rstrip()) - 1  # the top-level object's closing brace
        if text[end] != "}":
            raise Malformed("the frame does not end its object")
        separator = "," if message else ""
        return (text[:end] + separator + '"params":{"_meta":{' + ours + "}}"
                + text[end:]).encode("utf-8")
    if not isinstance(params, dict):
        return frame
    lead = _PARAMS_FIRST.match(text)
    at = lead.end() - 1 if lead is not None else _value_start(text, _skip_ws(text, 0), "params")
    meta = params.get("_meta", _ABSENT)
    if meta is _ABSENT:
        separator = "," if params else ""
        return (text[:at + 1] + '"_meta":{' + ours + "}" + separator
                + text[at + 1:]).encode("utf-8")
    if not isinstance(meta, dict):
        return frame
    at = _value_start(text, at, "_meta")
    if not entries.keys() & meta.keys():
        separator = "," if meta else ""
        return (text[:at + 1] + ours + separator + text[at + 1:]).encode("utf-8")
    kept = [text[m.start:m.value_end] for m in object_members(text, at)
            if m.key not in entries]
    end = _value_end(text, at)
    return (text[:at] + "{" + ",".join([ours, *kept]) + "}" + text[end:]).encode("utf-8")


def _value_start(text: str, pos: int, key: str) -> int:
    """Where the value of the first member named ``key`` of the object at ``pos``
    starts; the members before it are skipped, the value itself is not read."""
    if text[pos:pos + 1] != "{":
        raise Malformed("an object was expected")
    pos = _skip_ws(text, pos + 1)
    while text[pos:pos + 1] == '"':
        name, key_end = _scan(text, pos)
        colon = _skip_ws(text, key_end)
        if text[colon:colon + 1] != ":":
            raise Malformed("':' was expected")
        value_start = _skip_ws(text, colon + 1)
        if name == key:
            return value_start
        pos = _skip_ws(text, _value_end(text, value_start))
        if text[pos:pos + 1] != ",":
            break
        pos = _skip_ws(text, pos + 1)
    raise Malformed(f"no member {key!r}")


def _string(value: str) -> str:
    """A JSON string; trace context values are plain ASCII, written as they are."""
    return f'"{value}"' if _PLAIN.fullmatch(value) else json.dumps(value)


def top_level_id(frame: bytes) -> int | str | None:
    """The top-level ``id`` of a frame, read without parsing anything nested.

    For frames a parser refused (nested too deep, cut off): every member before
    the first one that cannot be read is seen. None when there is no readable
    string or integer id.
    """
    text = frame.decode("utf-8", "replace")
    try:
        for member in object_members(text, _skip_ws(text, 0)):
            if member.key == "id":
                if member.value_end >= len(text):  # a number the cut may have shortened
                    return None
                return _id_value(text[member.value_start:member.value_end])
    except (Malformed, IndexError):
        pass
    return None


def tail_id(tail: bytes) -> int | str | None:
    """The id when it is the last member of a frame that was cut off before it."""
    match = _TAIL_ID.search(tail)
    return _id_value(match.group(1).decode("utf-8", "replace")) if match is not None else None


def _id_value(raw: str) -> int | str | None:
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
