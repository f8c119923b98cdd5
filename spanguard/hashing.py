"""Keyed hashing of identifiers and canonical hashing of payloads.

User, tenant and session ids must correlate across spans without being readable
in any backend, so they are HMAC-SHA256'd with a key the operator controls. A
plain hash of an e-mail address is reversible by dictionary; a keyed one is not.
Payload hashes (tool arguments) are unkeyed sha256 of canonical JSON so that two
parties (maker and checker, or two processes) compute the same value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

_KEY_FILE = "hash.key"
_PREFIX_LEN = 16  # hex chars kept: 64 bits is plenty for correlation, short on the wire


_HASHED = re.compile(r"hmac:[0-9a-f]{16}")


def is_keyed_hash(value: object) -> bool:
    """True for a value shaped like :class:`KeyedHasher` output (``hmac:`` + 16 hex)."""
    return isinstance(value, str) and _HASHED.fullmatch(value) is not None


class KeyedHasher:
    """HMAC-SHA256 of identifiers, truncated, with a small cache for the hot path.

    ``raw_conversation_ids=True`` makes :meth:`conversation_id` return ids as
    given: for teams whose backend must show their own session ids (Langfuse
    sessions), at the price of those ids leaving the process. User and tenant
    ids are hashed either way.
    """

    __slots__ = ("_cache", "_key", "raw_conversation_ids")

    def __init__(self, key: bytes, *, raw_conversation_ids: bool = False) -> None:
        if len(key) < 16:
            raise ValueError("hash key must be at least 16 bytes")
        self._key = key
        self._cache: dict[str, str] = {}
        self.raw_conversation_ids = raw_conversation_ids

    def conversation_id(self, identifier: object) -> str:
        """The value written as ``gen_ai.conversation.id`` / ``session.id``.

        A keyed hash by default (the same key as user and tenant ids, so the
        hash equals the session key budgets and MCP correlation use); the id
        itself with ``raw_conversation_ids``. A value that already is a keyed
        hash is kept, so a conversation id read back from a span finds its runs.
        """
        if self.raw_conversation_ids or is_keyed_hash(identifier):
            return str(identifier)
        return self(identifier)

    def __call__(self, identifier: object) -> str:
        text = str(identifier)
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        digest = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        value = "hmac:" + digest[:_PREFIX_LEN]
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[text] = value
        return value


def load_or_create_key(home: Path | None) -> tuple[bytes, str | None]:
    """Return the hashing key and, if it could not be persisted, why.

    Order: ``SPANGUARD_HASH_KEY`` (hex or text), then ``<home>/hash.key``,
    creating it on first use so hashes stay stable across restarts.
    """
    env = os.environ.get("SPANGUARD_HASH_KEY")
    if env:
        try:
            key = bytes.fromhex(env)
        except ValueError:
            key = env.encode("utf-8")
        if len(key) < 16:
            key = hashlib.sha256(key).digest()
        return key, None
    if home is not None:
        path = home / _KEY_FILE
        try:
            if path.exists():
                return bytes.fromhex(path.read_text().strip()), None
            home.mkdir(parents=True, exist_ok=True)
            key = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(key.hex())
            return key, None
        except (OSError, ValueError) as exc:
            return secrets.token_bytes(32), (
                f"{path}: cannot read or create the hashing key ({exc}); using a "
                "per-process key, so hashed ids will not match across restarts "
                "(set SPANGUARD_HASH_KEY to fix)"
            )
    return secrets.token_bytes(32), None


# One encoder, built once: json.dumps would build an identical one on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal payloads give equal text."""
    return _CANONICAL.encode(value)


def payload_hash(value: Any) -> str:
    """sha256 of canonical JSON; the binding between a hold and its approval."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
