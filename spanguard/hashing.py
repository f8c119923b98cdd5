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
import importlib
import json
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from spanguard.home import ensure_home

_KEY_FILE = "hash.key"
_EMPTY_KEY_RETRIES = 100  # x 10 ms: an O_EXCL writer has long finished by then
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
            try:
                return _read_key(path), None
            except FileNotFoundError:
                return _create_key(home, path), None
        except (OSError, ValueError) as exc:
            return secrets.token_bytes(32), (
                f"{path}: cannot read or create the hashing key ({exc}); using a "
                "per-process key, so hashed ids will not match across restarts "
                "(set SPANGUARD_HASH_KEY to fix)"
            )
    return secrets.token_bytes(32), None


def _create_key(home: Path, path: Path) -> bytes:
    """Publish a new key at ``path`` unless another process got there first; return the winner.

    Processes starting together on a fresh home all get here. Each writes a
    complete key to a private temporary file and hard-links it into place: the
    link either succeeds whole or fails with ``FileExistsError``, so no process
    ever reads a half-written key, and every loser reads the winner's. On file
    systems without hard links, ``O_EXCL`` decides the winner instead and readers
    wait for its content (:func:`_read_key`).
    """
    ensure_home(home)
    key = secrets.token_bytes(32)
    fd, temp = tempfile.mkstemp(prefix=f".{_KEY_FILE}.", dir=home)  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return _read_key(path)
        except OSError:
            return _create_exclusive(path, key)
        return key
    finally:
        os.unlink(temp)


def _create_exclusive(path: Path, key: bytes) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex())
    return key


def _read_key(path: Path) -> bytes:
    """The key in ``path``; an empty file is one still being written, so wait a little."""
    for _ in range(_EMPTY_KEY_RETRIES):
        text = path.read_text().strip()
        if text:
            key = bytes.fromhex(text)
            if len(key) < 16:
                raise ValueError("the key in it is shorter than 16 bytes")
            return key
        time.sleep(0.01)
    raise ValueError("the file is empty")


# One encoder, built once: json.dumps would build an identical one on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal payloads give equal text."""
    return _CANONICAL.encode(value)


def payload_hash(value: Any) -> str:
    """sha256 of canonical JSON; the binding between a hold and its approval."""
    digest: str = _sha256(canonical_json(value).encode("utf-8")).hexdigest()
    return "sha256:" + digest


def _small_sha256() -> Any:
    """CPython's built-in SHA-256 where it has one, else hashlib's (OpenSSL).

    Payloads are a few hundred bytes, hashed once per tool call. For inputs that
    small, OpenSSL 3's per-call setup (an EVP context and its provider lookup) costs
    several times the hashing, ~10 us when its code is cold, as it is between two
    tool calls; the built-in one (``_sha2`` from 3.12, ``_sha256`` before; same
    digest) costs ~3 us. A build without it falls back to hashlib.
    """
    for module in ("_sha2", "_sha256"):
        try:
            return importlib.import_module(module).sha256
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


_sha256 = _small_sha256()
