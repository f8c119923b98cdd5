"""Ed25519 keys for reviewers and the audit writer, on ``cryptography``.

Nothing here is cryptography of our own: keys, signatures and their encodings
are the library's (Ed25519, PKCS#8 PEM for private keys). What spanguard adds is
where keys live and how they are named:

* A public key is written ``ed25519:`` + base64 of its 32 raw bytes, the form a
  policy lists (``[holds.reviewers.maria] key = "ed25519:..."``).
* A private key is a PEM file readable by its owner only. :func:`create_key_file`
  creates it with mode 0600 (its directory 0700) and never overwrites one;
  :meth:`Signer.from_file` refuses a key file that others may read.
* A reviewer's key lives outside the agent's home (:func:`reviewer_key_dir`:
  ``$SPANGUARD_REVIEWER_KEYS``, else ``$XDG_CONFIG_HOME/spanguard/reviewers``,
  else ``~/.config/spanguard/reviewers``), so the process that makes the calls
  does not find it beside the store it writes.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from spanguard.errors import ConfigError
from spanguard.home import resolve_home

KEY_PREFIX = "ed25519:"
REVIEWER_KEYS_ENV = "SPANGUARD_REVIEWER_KEYS"
KEY_SUFFIX = ".key"


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public_key(text: object, source: str, key: str = "key") -> Ed25519PublicKey:
    """``ed25519:BASE64`` as a key, or a ConfigError naming ``source`` and ``key``."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise ConfigError(source, f"{key} must be a public key 'ed25519:BASE64', got {text!r}",
                          "print one with: spanguard reviewer show --as NAME")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX):], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(source, f"{key} is not an Ed25519 public key: {text!r} "
                                  f"({exc})") from exc


def verify(key: Ed25519PublicKey, data: bytes, signature: object) -> bool:
    """Whether ``signature`` (base64 text) is ``key``'s signature of ``data``."""
    if not isinstance(signature, str):
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class Signer:
    """A private key in memory; ``public`` is its ``ed25519:...`` text."""

    __slots__ = ("_key", "path", "public")

    def __init__(self, key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = key
        self.path = path
        self.public = public_key_text(key.public_key())

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Signer:
        """Load a key file, refusing one that anyone but its owner may read."""
        where = Path(path)
        try:
            mode = where.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(str(where), f"the private key is readable by others "
                                              f"(mode {stat.filemode(mode)})",
                                  f"chmod 600 {where}")
            key = serialization.load_pem_private_key(where.read_bytes(), password=None)
        except OSError as exc:
            raise ConfigError(str(where), f"cannot read the private key: "
                                          f"{exc.strerror or exc}",
                              "create one with: spanguard reviewer init --as NAME") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(where), f"not an unencrypted PEM private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(str(where), f"not an Ed25519 key ({type(key).__name__})")
        return cls(key, where)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data)).decode("ascii")

    def verifier(self) -> Ed25519PublicKey:
        return self._key.public_key()


def create_key_file(path: str | os.PathLike[str]) -> Signer:
    """A new key at ``path`` (mode 0600, directory 0700); an existing file is kept."""
    where = Path(path)
    where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    signer = Signer.generate()
    pem = signer._key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    try:
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(str(where), "a key already exists here; it was left unchanged",
                          "print its public key with: spanguard reviewer show --as NAME") \
            from exc
    except OSError as exc:
        raise ConfigError(str(where), f"cannot create the key file: {exc.strerror or exc}") \
            from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    signer.path = where
    return signer


def reviewer_key_dir() -> Path:
    """Where reviewer keys are kept by default (outside any spanguard home)."""
    explicit = os.environ.get(REVIEWER_KEYS_ENV)
    if explicit:
        return Path(explicit)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "spanguard" / "reviewers"


def reviewer_key_path(name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """The default key file of reviewer ``name`` (a file name, so no path separators)."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ConfigError("--as", f"{name!r} cannot name a key file",
                          "use a reviewer name without '/', '\\' or a leading '.'")
    base = Path(directory) if directory is not None else reviewer_key_dir()
    return base / f"{name}{KEY_SUFFIX}"


def outside_home(path: Path, home: str | os.PathLike[str] | None) -> Path:
    """``path`` resolved; refused when it lies inside the spanguard home the agent writes."""
    resolved = path.expanduser().resolve()
    agent_home = resolve_home(home).expanduser().resolve()
    if resolved == agent_home or agent_home in resolved.parents:
        raise ConfigError(str(path), f"a private key must not live in the agent's spanguard "
                                     f"home ({agent_home})",
                          "put it where the agent's process cannot read it")
    return resolved
