"""Errors shaped like real provider SDK errors, and a clock tests move by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FakeResponse:
    def __init__(self, status_code: int, headers: Mapping[str, str] | None = None) -> None:
        self.status_code = status_code
        self.headers = dict(headers or {})


class APIStatusError(Exception):
    """Like openai/anthropic ``APIStatusError``: ``status_code``, ``response``, ``body``."""

    def __init__(self, message: str, status_code: int, *,
                 headers: Mapping[str, str] | None = None, body: Any = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = FakeResponse(status_code, headers)
        self.body = body
        self.code = code


class RateLimitError(APIStatusError):
    def __init__(self, message: str = "Rate limit reached", *,
                 headers: Mapping[str, str] | None = None, code: str | None = None) -> None:
        super().__init__(message, 429, headers=headers, code=code)


class APIConnectionError(Exception):
    """Like ``openai.APIConnectionError``: no status, only a class name to go on."""


class APITimeoutError(APIConnectionError):
    pass


class FakeClock:
    """``clock()`` returns fake time; ``sleep(s)`` records the wait and advances it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
