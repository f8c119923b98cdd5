"""Checks shared by the policy-table parsers and the config objects they build.

Every guard's configuration is validated once, when it is built (in code or from
TOML), with an error that names the key and says what is wrong with it; the
per-call path never re-checks. ``bool`` is refused where a number is expected
(TOML ``true`` is not a limit of 1), and NaN is never a number.

The pattern every part follows: the config object's ``__post_init__`` checks
its fields with these helpers (so code-built values are checked too); the
table parser checks the keys (:func:`check_keys`), converts TOML shapes (lists
to tuples, durations to seconds) and re-raises under the table's name
(:func:`in_table`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from spanguard.errors import ConfigError

T = TypeVar("T")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def check_keys(table: Mapping[str, Any], allowed: Collection[str], source: str) -> None:
    """Refuse unknown keys, naming the first one and the keys that are known."""
    for key in table:
        if key not in allowed:
            raise ConfigError(source, f"unknown key {key!r}",
                              f"known keys: {', '.join(sorted(allowed))}")


def in_table(source: str, build: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``build(*args, **kwargs)``, with a config object's own error re-raised under the
    table's name."""
    try:
        return build(*args, **kwargs)
    except ConfigError as exc:
        raise ConfigError(source, exc.reason, exc.hint) from exc


def _is_number(value: Any, integer: bool) -> bool:
    numeric = (int,) if integer else (int, float)
    return isinstance(value, numeric) and not isinstance(value, bool) and value == value


def limit(value: Any, key: str, source: str, *, integer: bool) -> Any:
    """A non-negative limit (int, or int/float when ``integer`` is False), or None."""
    if value is None:
        return None
    if not _is_number(value, integer):
        kind = "an integer" if integer else "a number"
        got = repr(value) if value != value else type(value).__name__
        raise ConfigError(source, f"{key} must be {kind}, got {got}")
    if value < 0:
        raise ConfigError(source, f"{key} must not be negative, got {value!r}")
    return value


def positive(value: Any, key: str, source: str, *, integer: bool) -> Any:
    """A strictly positive number (same type rules as :func:`limit`)."""
    checked = limit(value, key, source, integer=integer)
    if checked is None or checked == 0:
        raise ConfigError(source, f"{key} must be greater than 0, got {value!r}")
    return checked


def integer(value: Any, key: str, source: str, *, minimum: int) -> int:
    """An int of at least ``minimum``."""
    if not _is_number(value, True) or value < minimum:
        raise ConfigError(source, f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def seconds(value: Any, key: str, source: str, *, minimum: float = 0.0,
            strict: bool = False) -> float:
    """A number of seconds ``>= minimum`` (``> minimum`` when ``strict``)."""
    ok = _is_number(value, False) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ConfigError(source, f"{key} must be a number of seconds {bound}, got {value!r}")
    return float(value)


def duration(value: Any, key: str, source: str) -> float:
    """``"1h"``, ``"30m"``, ``"45s"``, ``"2d"`` or a number of seconds, > 0."""
    if _is_number(value, False):
        result = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        result = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ConfigError(source, f"{key} must be a duration, got {value!r}",
                          'write e.g. "1h", "30m", "45s", "2d" or a number of seconds')
    if result <= 0:
        raise ConfigError(source, f"{key} must be a positive duration, got {value!r}")
    return result


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


def optional_text(value: Any, key: str, source: str) -> str | None:
    return None if value is None else text(value, key, source)


def strings(value: Any, key: str, source: str) -> tuple[str, ...]:
    """A list (TOML array), tuple or set of strings, as a tuple."""
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
            isinstance(v, str) for v in value):
        raise ConfigError(source, f"{key} must be a list of strings, got {value!r}")
    return tuple(value)


def table(value: Any, key: str, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(source, f"{key} must be a table, got {value!r}")
    return value


def string_table(value: Any, key: str, source: str) -> dict[str, str]:
    """A table of ``name = "text"``."""
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(source, f'{key} must be a table of name = "text", got {value!r}')
    return dict(value)
