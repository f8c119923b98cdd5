"""Which store a URL names, the one way every guard, CLI and API finds it.

Resolution: an explicit URL (an argument, ``--store``, the policy's ``[store]
url``), else ``SPANGUARD_STORE_URL``, else ``sqlite:///$SPANGUARD_HOME/guardrails.db``.
URLs: ``memory://`` or ``memory://NAME`` (a store shared by the whole process),
``sqlite:///abs/path.db`` (one machine, many processes), ``redis://host:port/db``
or ``rediss://...`` (many machines). A URL is checked at load time, without
connecting, so a typo fails when the policy is read, not at the first hold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from spanguard.config import resolve_home
from spanguard.errors import ConfigError
from spanguard.guardrails import _parse

STORE_URL_ENV = "SPANGUARD_STORE_URL"
DB_NAME = "guardrails.db"
SCHEMES = ("memory", "sqlite", "redis", "rediss")
_USE = "use memory://, sqlite:///abs/path.db or redis://host:port/db"


def resolve(url: str | None = None,
            home: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """(url, where it came from): the argument, the environment, or the default."""
    if url:
        return url, "store url"
    env = os.environ.get(STORE_URL_ENV)
    if env:
        return env, STORE_URL_ENV
    return default_store_url(home), "default store"


def resolve_store_url(url: str | None = None,
                      home: str | os.PathLike[str] | None = None) -> str:
    """``url``, else ``SPANGUARD_STORE_URL``, else SQLite under the spanguard home."""
    return resolve(url, home)[0]


def default_store_url(home: str | os.PathLike[str] | None = None) -> str:
    return "sqlite://" + str((resolve_home(home) / DB_NAME).resolve())


def check_store_url(url: Any, source: str = "store url") -> str:
    """Refuse a URL no store understands, at load time, without connecting."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(source, f"url must look like scheme://..., got {url!r}", _USE)
    scheme, rest = url.split("://", 1)
    if scheme not in SCHEMES:
        raise ConfigError(source, f"unknown store scheme {scheme!r} in url", _USE)
    if scheme == "sqlite" and (not rest.startswith("/") or not rest.strip("/")):
        raise ConfigError(source, f"sqlite url needs an absolute path, got {url!r}",
                          "write sqlite:///abs/path.db (three slashes)")
    return url


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path.db`` -> the path (the URL must have passed the check)."""
    return Path("/" + check_store_url(url)[len("sqlite://"):].lstrip("/"))


def redact_url(url: str) -> str:
    """The URL without its password, for messages and spans."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class StoreConfig:
    """The policy's ``[store]`` table: the store every guard of the policy shares."""

    url: str

    def __post_init__(self) -> None:
        check_store_url(self.url, "store")


def parse_store(table: Mapping[str, Any], source: str) -> StoreConfig:
    _parse.check_keys(table, ("url",), source)
    if "url" not in table:
        raise ConfigError(source, "url is required")
    url = check_store_url(_parse.text(table["url"], "url", source), f"{source} url")
    return StoreConfig(url=url)
