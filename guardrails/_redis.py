"""One way to open a Redis client for the guardrail stores (budgets, holds, audit).

The client library is an optional extra, and a store that can hang forever on a
dead server would turn "fail closed" into "hang": every client gets timeouts.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from spanguard.errors import ConfigError

DEFAULT_TIMEOUT_SECONDS = 5.0


def connect(url: str, *, decode_responses: bool = False,
            timeout: float = DEFAULT_TIMEOUT_SECONDS) -> tuple[Any, ModuleType]:
    """A ``redis.Redis`` for ``url`` and the ``redis`` module (for its error types)."""
    try:
        import redis
    except ImportError as exc:
        raise ConfigError(url, "a redis:// store needs the redis package",
                          "pip install 'spanguard[redis]'") from exc
    client = redis.Redis.from_url(url, decode_responses=decode_responses,
                                  socket_timeout=timeout, socket_connect_timeout=timeout)
    return client, redis
