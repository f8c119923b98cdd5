"""Which failures deserve another attempt, decided by duck typing across providers.

No provider SDK is imported: OpenAI, Anthropic, Google, httpx and the MCP SDK all
expose the same few facts under a handful of names (an HTTP status, response
headers, an error ``type``/``code``, the exception's class name), and reading
those is enough to tell a throttled or overloaded provider from a bad request.

Three kinds of failure, because they call for three different moves:

``transient``  retry the same route (429, 408, 5xx, 529/overloaded, timeouts,
               connection errors), then fail over to the next route;
``route``      this route cannot serve anyone right now (auth, unknown model,
               exhausted quota, a guardrail refusing it): do not retry it, fail over;
``request``    the request itself is at fault (400, 422, content-policy refusal,
               any unrecognised exception): retrying or re-routing it would only
               repeat the failure, so it is raised as it is.

``Failure.reason`` is the ``error.type`` value for the attempt's span.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from spanguard.errors import SpanguardError
from spanguard.guardrails.errors import AllRoutesFailed, GuardrailViolation

FailureKind = Literal["transient", "route", "request"]

QUOTA_THROTTLED = "quota_throttled"
QUOTA_EXHAUSTED = "quota_exhausted"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
SERVER_ERROR = "server_error"
PROVIDER_OVERLOADED = "provider_overloaded"
AUTH_ERROR = "auth_error"
NOT_FOUND = "not_found"
BAD_REQUEST = "bad_request"
INVALID_REQUEST = "invalid_request"
PROVIDER_REFUSAL = "provider_refusal"

_STATUS_ATTRS = ("status_code", "status", "http_status")
_REFUSAL_MARKERS = ("content_policy", "content_filter", "refusal", "contentpolicy",
                    "contentfilter", "safety")
_ROUTE_STATUS = {401: AUTH_ERROR, 403: AUTH_ERROR, 404: NOT_FOUND}
_REQUEST_STATUS = {400: BAD_REQUEST, 422: INVALID_REQUEST}


@dataclass(frozen=True, slots=True)
class Failure:
    """What one failed attempt means for the next move."""

    kind: FailureKind
    reason: str
    status: int | None = None
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        """Worth another attempt on the same route."""
        return self.kind == "transient"

    @property
    def failover(self) -> bool:
        """Worth trying the next route."""
        return self.kind != "request"


def classify(error: BaseException, *, now: float | None = None) -> Failure:
    """Classify ``error``; ``now`` (epoch seconds) resolves HTTP-date ``Retry-After``."""
    if isinstance(error, (GuardrailViolation, AllRoutesFailed)):
        return Failure("route", error.error_type)  # this route is closed; another may not be
    own_type = getattr(error, "error_type", None)
    if isinstance(error, SpanguardError) and isinstance(own_type, str):
        return Failure("request", own_type)
    status = http_status(error)
    hint = retry_after(error, now=now)
    markers = _markers(error)
    if any(m in token for token in markers for m in _REFUSAL_MARKERS):
        return Failure("request", PROVIDER_REFUSAL, status)
    if status == 529 or "overloaded_error" in markers or "overloaded" in str(error).lower():
        return Failure("transient", PROVIDER_OVERLOADED, status, hint)
    if status is not None:
        return _by_status(status, markers, hint)
    names = [cls.__name__ for cls in type(error).__mro__]
    if isinstance(error, TimeoutError) or any("Timeout" in n for n in names):
        return Failure("transient", TIMEOUT, None, hint)
    if isinstance(error, ConnectionError) or any("Connection" in n for n in names):
        return Failure("transient", CONNECTION_ERROR, None, hint)
    return Failure("request", error_type_name(error))


def _by_status(status: int, markers: set[str], hint: float | None) -> Failure:
    if status == 429:
        if "insufficient_quota" in markers:
            return Failure("route", QUOTA_EXHAUSTED, status)
        return Failure("transient", QUOTA_THROTTLED, status, hint)
    if status == 408:
        return Failure("transient", TIMEOUT, status, hint)
    if status >= 500:
        return Failure("transient", SERVER_ERROR, status, hint)
    if status in _ROUTE_STATUS:
        return Failure("route", _ROUTE_STATUS[status], status)
    return Failure("request", _REQUEST_STATUS.get(status, f"http_{status}"), status)


def error_type_name(error: BaseException) -> str:
    """OpenTelemetry's fallback ``error.type``: the fully qualified class name."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def http_status(error: BaseException) -> int | None:
    """The HTTP status an SDK error carries, wherever that SDK keeps it."""
    for holder in (error, getattr(error, "response", None)):
        if holder is None:
            continue
        for attr in _STATUS_ATTRS:
            status = _as_status(getattr(holder, attr, None))
            if status is not None:
                return status
    return None


def _as_status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 100 <= value <= 599:
        return value
    return None


def _markers(error: BaseException) -> set[str]:
    """Lower-cased error ``type``/``code`` strings and class names, from any SDK shape."""
    found = {cls.__name__.lower() for cls in type(error).__mro__[:-2]}
    for source in (error, getattr(error, "body", None)):
        for value in _fields(source, ("type", "code")):
            found.add(value.lower())
        inner = _field(source, "error")
        for value in _fields(inner, ("type", "code")):
            found.add(value.lower())
    return found


def _fields(source: Any, names: tuple[str, ...]) -> Iterator[str]:
    for name in names:
        value = _field(source, name)
        if isinstance(value, str):
            yield value


def _field(source: Any, name: str) -> Any:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def retry_after(error: BaseException, *, now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait (``Retry-After[-ms]`` header or attribute)."""
    direct = getattr(error, "retry_after", None)
    if isinstance(direct, timedelta):
        return max(0.0, direct.total_seconds())
    if isinstance(direct, (int, float)) and not isinstance(direct, bool):
        return max(0.0, float(direct))
    for holder in (error, getattr(error, "response", None)):
        headers = getattr(holder, "headers", None) if holder is not None else None
        if headers is None or not hasattr(headers, "get"):
            continue
        millis = _header(headers, "retry-after-ms")
        if millis is not None:
            try:
                return max(0.0, float(millis) / 1000.0)
            except ValueError:
                pass
        value = _header(headers, "retry-after")
        if value is not None:
            return _parse_retry_after(value, now)
    return None


def _header(headers: Any, name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    if value is None and isinstance(headers, Mapping):
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = candidate
                break
    return None if value is None else str(value).strip()


def _parse_retry_after(value: str, now: float | None) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def error_usage(error: BaseException) -> tuple[int, int]:
    """Tokens a failed call reported (input, output); (0, 0) when it reported none.

    Few providers bill or report usage on a failure, so this is a lower bound of
    what failed attempts cost.
    """
    for source in (getattr(error, "usage_metadata", None), getattr(error, "usage", None),
                   _field(getattr(error, "body", None), "usage")):
        if source is None:
            continue
        inputs = _field(source, "input_tokens") or _field(source, "prompt_tokens") or 0
        outputs = _field(source, "output_tokens") or _field(source, "completion_tokens") or 0
        if isinstance(inputs, int) and isinstance(outputs, int):
            return inputs, outputs
    return 0, 0
