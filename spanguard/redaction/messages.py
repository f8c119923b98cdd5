"""Redaction of the GenAI JSON message attributes one piece of text at a time.

``gen_ai.input.messages`` and ``gen_ai.output.messages`` hold, as JSON, the same
texts as OpenInference's flattened keys of the same span (a message's content, a
tool's response, a tool call's arguments). Redacting the JSON document as one
string would scan every message a second time; redacting its pieces instead, each
through the memo, reuses the result of the flattened key. A tool call's arguments
are redacted as their canonical JSON text, the very string OpenInference records,
so a key name such as ``"password"`` still gives its value away to the credential
detector. Schema keys (``role``, ``parts``, ``type``, ...) are never personal data
and are kept; any other key is redacted like a value.

Whatever does not have the GenAI shape (a list of objects) is left to the caller,
which redacts it as plain text. An unchanged document is returned as the same
string; a changed one is written back as canonical JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from spanguard.hashing import canonical_json

__all__ = ["redact_messages_json"]

Redact = Callable[[str], tuple[str, int]]

_SCHEMA_KEYS = frozenset({"role", "parts", "type", "content", "id", "name", "arguments",
                          "response", "finish_reason", "mime_type", "modality", "uri"})


def redact_messages_json(text: str, redact: Redact) -> tuple[str, int] | None:
    """``text`` with every piece redacted, or None when it is not a GenAI message list."""
    if not text.startswith("["):
        return None
    try:
        messages = json.loads(text)
    except ValueError:
        return None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    total = 0
    out = []
    for message in messages:
        redacted, count = _mapping(message, redact)
        out.append(redacted)
        total += count
    return (canonical_json(out), total) if total else (text, 0)


def _mapping(value: dict[str, Any], redact: Redact) -> tuple[dict[str, Any], int]:
    total = 0
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _SCHEMA_KEYS:
            key, count = redact(key)
            total += count
        if key == "arguments" or not isinstance(item, (str, list, dict)):
            out[key], count = _as_text(item, redact)
        else:
            out[key], count = _value(item, redact)
        total += count
    return out, total


def _value(value: Any, redact: Redact) -> tuple[Any, int]:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        total = 0
        out = []
        for item in value:
            redacted, count = _value(item, redact)
            out.append(redacted)
            total += count
        return out, total
    if isinstance(value, dict):
        return _mapping(value, redact)
    return _as_text(value, redact)


def _as_text(value: Any, redact: Redact) -> tuple[Any, int]:
    """Redact a structured value as its canonical JSON (OpenInference's string for it)."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool):
        return value, 0
    redacted, count = redact(canonical_json(value))
    if not count:
        return value, 0
    try:
        return json.loads(redacted), count
    except ValueError:  # a placeholder where a number stood: keep the redacted text
        return redacted, count
