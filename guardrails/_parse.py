"""Checks shared by the policy-table parsers and the config objects they build.

Every guard's configuration is validated once, when it is built (in code or from
TOML), with an error that names the key and says what is wrong with it; the
per-call path never re-checks. ``bool`` is refused where a number is expected
(TOML ``true`` is not a limit of 1).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from spanguard.errors import ConfigError


def check_keys(table: Mapping[str, Any], allowed: Collection[str], source: str) -> None:
    """Refuse unknown keys, naming the first one and the keys that are known."""
    for key in table:
        if key not in allowed:
            raise ConfigError(source, f"unknown key {key!r}",
                              f"known keys: {', '.join(sorted(allowed))}")


def limit(value: Any, key: str, source: str, *, integer: bool) -> Any:
    """A non-negative limit (int, or int/float when ``integer`` is False), or None."""
    if value is None:
        return None
    numeric = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        kind = "an integer" if integer else "a number"
        raise ConfigError(source, f"{key} must be {kind}, got {type(value).__name__}")
    if value < 0 or value != value:
        raise ConfigError(source, f"{key} must not be negative, got {value!r}")
    return value


def positive(value: Any, key: str, source: str, *, integer: bool) -> Any:
    """A strictly positive number (same type rules as :func:`limit`)."""
    checked = limit(value, key, source, integer=integer)
    if checked is None or checked == 0:
        raise ConfigError(source, f"{key} must be greater than 0, got {value!r}")
    return checked


def flag(value: Any, key: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(source, f"{key} must be true or false, got {value!r}")
    return value


def choice(value: Any, key: str, source: str, options: Collection[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigError(source, f"{key} must be one of {', '.join(sorted(options))}, "
                                  f"got {value!r}")
    return value


def text(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, f"{key} must be a non-empty string, got {value!r}")
    return value
