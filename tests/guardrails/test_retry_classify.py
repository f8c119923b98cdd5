"""The transient-failure classifier reads every SDK's error shape without importing one."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import ClassVar

import pytest

from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.transient import classify, error_usage, retry_after
from tests.guardrails.fakes import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    FakeResponse,
    RateLimitError,
)


class StatusOnly(Exception):
    def __init__(self, attr: str, value: object) -> None:
        super().__init__("boom")
        setattr(self, attr, value)


class ResponseOnly(Exception):
    def __init__(self, status: int) -> None:
        super().__init__("boom")
        self.response = FakeResponse(status)


class ContentPolicyViolationError(Exception):
    pass


@pytest.mark.parametrize(("error", "kind", "reason"), [
    (RateLimitError(), "transient", "quota_throttled"),
    (APIStatusError("Request Timeout", 408), "transient", "timeout"),
    (APIStatusError("Internal Server Error", 500), "transient", "server_error"),
    (APIStatusError("Bad Gateway", 502), "transient", "server_error"),
    (APIStatusError("Overloaded", 529), "transient", "provider_overloaded"),
    # Anthropic reports overload mid-stream as an error event on a 200 response.
    (APIStatusError("stream error", 200,
                    body={"type": "error", "error": {"type": "overloaded_error"}}),
     "transient", "provider_overloaded"),
    (RuntimeError("model is currently overloaded with other requests"),
     "transient", "provider_overloaded"),
    (TimeoutError(), "transient", "timeout"),
    (asyncio.TimeoutError(), "transient", "timeout"),
    (APITimeoutError("Request timed out."), "transient", "timeout"),
    (ConnectionResetError(), "transient", "connection_error"),
    (APIConnectionError("Connection error."), "transient", "connection_error"),
    (StatusOnly("status", 503), "transient", "server_error"),
    (StatusOnly("http_status", 429), "transient", "quota_throttled"),
    (StatusOnly("status_code", "503"), "transient", "server_error"),
    (ResponseOnly(504), "transient", "server_error"),
    (APIStatusError("Unauthorized", 401), "route", "auth_error"),
    (APIStatusError("Forbidden", 403), "route", "auth_error"),
    (APIStatusError("model not found", 404), "route", "not_found"),
    (RateLimitError("You exceeded your current quota", code="insufficient_quota"),
     "route", "quota_exhausted"),
    (APIStatusError("Bad Request", 400), "request", "bad_request"),
    (APIStatusError("Unprocessable", 422), "request", "invalid_request"),
    (APIStatusError("flagged", 400, code="content_policy_violation"),
     "request", "provider_refusal"),
    (APIStatusError("filtered", 400, body={"error": {"code": "content_filter"}}),
     "request", "provider_refusal"),
    (ContentPolicyViolationError("refused"), "request", "provider_refusal"),
    (APIStatusError("Conflict", 409), "request", "http_409"),
    (ValueError("bad"), "request", "ValueError"),
    (StatusOnly("status", "RESOURCE_EXHAUSTED"), "request", "tests.guardrails."
     "test_retry_classify.StatusOnly"),
])
def test_classify_kinds_and_reasons(error: Exception, kind: str, reason: str) -> None:
    failure = classify(error)
    assert (failure.kind, failure.reason) == (kind, reason)
    assert failure.retryable is (kind == "transient")
    assert failure.failover is (kind != "request")


def test_guardrail_refusal_fails_over_but_is_never_retried() -> None:
    class Refused(GuardrailViolation):
        error_type = "loop_budget_exceeded"

    failure = classify(Refused("over budget"))
    assert (failure.kind, failure.reason) == ("route", "loop_budget_exceeded")
    assert not failure.retryable


def test_retry_after_seconds_from_headers_any_case() -> None:
    assert retry_after(RateLimitError(headers={"retry-after": "7"})) == 7.0
    assert retry_after(RateLimitError(headers={"Retry-After": "2.5"})) == 2.5
    assert retry_after(RateLimitError(headers={"RETRY-AFTER": "3"})) == 3.0
    assert classify(RateLimitError(headers={"retry-after": "7"})).retry_after == 7.0


def test_retry_after_ms_wins_over_seconds() -> None:
    error = RateLimitError(headers={"retry-after-ms": "1500", "retry-after": "9"})
    assert retry_after(error) == 1.5


def test_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(datetime(2025, 1, 1, 12, 0, 30, tzinfo=timezone.utc), usegmt=True)
    error = RateLimitError(headers={"retry-after": later})
    assert retry_after(error, now=now.timestamp()) == 30.0
    assert retry_after(error, now=now.timestamp() + 60) == 0.0


def test_retry_after_attribute_and_headers_on_error_itself() -> None:
    class Throttled(Exception):
        retry_after = 4
        status_code = 429

    class WithHeaders(Exception):
        status_code = 503
        headers: ClassVar = {"retry-after": "11"}

    assert retry_after(Throttled()) == 4.0
    assert retry_after(WithHeaders()) == 11.0
    assert retry_after(RateLimitError(headers={"retry-after": "soon"})) is None
    assert retry_after(ValueError()) is None


def test_error_usage_from_langchain_and_openai_shapes() -> None:
    class LangChainShaped(Exception):
        usage_metadata: ClassVar = {"input_tokens": 120, "output_tokens": 8, "total_tokens": 128}

    class OpenAIShaped(Exception):
        body: ClassVar = {"usage": {"prompt_tokens": 50, "completion_tokens": 2}}

    assert error_usage(LangChainShaped()) == (120, 8)
    assert error_usage(OpenAIShaped()) == (50, 2)
    assert error_usage(RateLimitError()) == (0, 0)
