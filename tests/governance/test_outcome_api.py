"""``record_outcome()`` as a Langfuse score, through Langfuse's public scores API.

The fake below is a real HTTP server on 127.0.0.1 that answers as Langfuse's
``POST /api/public/scores`` does (``web/src/pages/api/public/scores/index.ts``) and
rejects, with 400, any body its validation would reject: the checks are written from
``PostScoresBody`` (``packages/shared/src/features/scores``: the foundation schema's
``id``, ``name``, ``traceId``, ``sessionId``, ``datasetRunId``, ``observationId``,
``comment``, ``metadata``, ``environment``, and per ``dataType`` the value's type) and
from the route's Basic auth with the project's key pair. Phoenix's annotations API is
tested against the real Phoenix (tests/integration/test_phoenix.py).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import spanguard
from spanguard.exporters.outcome_api import (
    LangfuseScores,
    OutcomeDelivery,
    OutcomeRecord,
    PhoenixAnnotations,
)

FOUNDATION = {"id", "name", "traceId", "sessionId", "datasetRunId", "observationId",
              "comment", "metadata", "environment"}


def langfuse_problem(body: Any) -> str | None:
    """Why Langfuse's PostScoresBody would refuse ``body`` (None: it accepts it)."""
    if not isinstance(body, dict):
        return "not an object"
    unknown = set(body) - FOUNDATION - {"value", "dataType", "configId"}
    if unknown:
        return f"unknown keys {unknown}"
    if not isinstance(body.get("name"), str) or not body["name"]:
        return "name must be a non-empty string"
    for key in ("id", "traceId", "sessionId", "observationId", "comment", "environment"):
        if key in body and not isinstance(body[key], str):
            return f"{key} must be a string"
    if "metadata" in body and not isinstance(body["metadata"], (dict, list, str, int, float)):
        return "metadata must be JSON"
    if not (body.get("traceId") or body.get("sessionId") or body.get("datasetRunId")):
        return "a score needs a trace, a session or a dataset run"
    if body.get("observationId") and not body.get("traceId"):
        return "an observation score needs its traceId"
    value, kind = body.get("value"), body.get("dataType")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "NUMERIC" and not numeric:
        return "NUMERIC needs a number"
    if kind == "CATEGORICAL" and not isinstance(value, str):
        return "CATEGORICAL needs a string"
    if kind == "BOOLEAN" and value not in (0, 1):
        return "BOOLEAN needs 0 or 1"
    if kind not in ("NUMERIC", "CATEGORICAL", "BOOLEAN", None):
        return f"unknown dataType {kind}"
    return None


class FakeLangfuse:
    def __init__(self, public_key: str, secret_key: str, failures: int = 0) -> None:
        token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.expected_auth = f"Basic {token}"
        self.scores: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.failures = failures  # answer 503 this many times first (an overloaded server)
        self.attempts = 0
        self.port = 0

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def fake_langfuse(**options: Any) -> Iterator[FakeLangfuse]:
    fake = FakeLangfuse("pk-lf-1", "sk-lf-1", **options)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            fake.attempts += 1
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/api/public/scores":
                return self._answer(404, {"message": "not found"})
            if self.headers.get("Authorization") != fake.expected_auth:
                return self._answer(401, {"message": "unauthorized"})
            if self.headers.get("Content-Type") != "application/json":
                return self._answer(415, {"message": "json only"})
            if fake.failures:
                fake.failures -= 1
                return self._answer(503, {"message": "busy"})
            score = json.loads(body)
            problem = langfuse_problem(score)
            if problem is not None:
                fake.rejected.append(problem)
                return self._answer(400, {"message": problem})
            fake.scores.append(score)
            return self._answer(200, {"id": score.get("id", "generated")})

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _langfuse(fake: FakeLangfuse, home: Path) -> spanguard.SpanguardHandle:
    return spanguard.configure(preset="langfuse", langfuse_host=fake.host,
                               langfuse_public_key="pk-lf-1", langfuse_secret_key="sk-lf-1",
                               home=home, langfuse_environment="production")


def test_an_outcome_on_a_trace_is_a_categorical_and_a_numeric_score(tmp_path: Path) -> None:
    with fake_langfuse() as fake:
        handle = _langfuse(fake, tmp_path)
        tracer = handle.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("invoke_agent support") as run:
            pass
        trace_id = format(run.get_span_context().trace_id, "032x")
        root_id = format(run.get_span_context().span_id, "016x")
        handle.force_flush()  # the run is in the local store: its root is the observation
        outcome = spanguard.record_outcome(trace_id=trace_id, action="accepted", rating=4,
                                           feedback="great - write to ann@example.com")
        handle.shutdown()
    assert fake.rejected == []
    by_name = {score["name"]: score for score in fake.scores}
    assert set(by_name) == {"user_outcome", "user_rating"}
    outcome_id = format(outcome.span_id, "016x")
    for name, score in by_name.items():
        assert score["traceId"] == trace_id and score["observationId"] == root_id
        assert score["id"] == f"spanguard-{outcome_id}-{name}"  # retries update, not add
        assert score["comment"] == "great - write to [REDACTED:email]"
        assert score["environment"] == "production"
        assert "sessionId" not in score
    assert by_name["user_outcome"]["dataType"] == "CATEGORICAL"
    assert by_name["user_outcome"]["value"] == "accepted"
    assert by_name["user_rating"]["dataType"] == "NUMERIC"
    assert by_name["user_rating"]["value"] == 4.0


def test_an_outcome_for_a_conversation_scores_the_session(tmp_path: Path) -> None:
    with fake_langfuse() as fake:
        handle = _langfuse(fake, tmp_path)
        spanguard.record_outcome(conversation_id="thread-9", action="escalated")
        handle.shutdown()
    (score,) = fake.scores
    assert score["sessionId"] == handle.hasher("thread-9")  # as the runs carry it
    assert "traceId" not in score and score["value"] == "escalated"


def test_a_busy_langfuse_is_retried_and_a_refusal_is_counted_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with fake_langfuse(failures=2) as fake:
        delivery = OutcomeDelivery([LangfuseScores.with_keys(fake.host, "pk-lf-1", "sk-lf-1")],
                                   backoff_seconds=0.01)
        delivery.deliver(OutcomeRecord(action="accepted", outcome_span_id="00f067aa0ba902b7",
                                       trace_id="4bf92f3577b34da6a3ce929d0e0e4736"))
        assert delivery.force_flush(10)
        assert [s["value"] for s in fake.scores] == ["accepted"] and fake.attempts == 3
        wrong = OutcomeDelivery([LangfuseScores.with_keys(fake.host, "pk-lf-1", "wrong")],
                                backoff_seconds=0.01)
        wrong.deliver(OutcomeRecord(action="accepted", outcome_span_id="00f067aa0ba902b8",
                                    trace_id="4bf92f3577b34da6a3ce929d0e0e4736"))
        assert wrong.force_flush(10)
        wrong.shutdown()
        delivery.shutdown()
    assert wrong.failed == 1 and fake.attempts == 4  # a 401 is not retried
    assert "did not reach langfuse" in caplog.text


def test_nothing_is_sent_without_a_backend_preset(tmp_path: Path) -> None:
    handle = spanguard.configure(home=tmp_path)
    assert handle.outcomes is None
    spanguard.record_outcome(conversation_id="c-1", action="dismissed")  # the span only
    handle.shutdown()


def test_phoenix_annotation_requests_follow_its_rest_api() -> None:
    destination = PhoenixAnnotations("http://127.0.0.1:6006")
    (on_trace,) = destination.requests(OutcomeRecord(
        action="accepted", outcome_span_id="00f067aa0ba902b7", rating=5,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736", feedback="thanks"))
    assert on_trace.url == "http://127.0.0.1:6006/v1/trace_annotations"
    (annotation,) = on_trace.body["data"]
    assert annotation == {
        "name": "user_outcome", "annotator_kind": "HUMAN", "trace_id":
        "4bf92f3577b34da6a3ce929d0e0e4736", "identifier": "spanguard-00f067aa0ba902b7",
        "result": {"label": "accepted", "score": 5, "explanation": "thanks"},
        "metadata": {"source": "spanguard", "outcome_span_id": "00f067aa0ba902b7"}}
    (on_session,) = destination.requests(OutcomeRecord(
        action="dismissed", outcome_span_id="00f067aa0ba902b9", session_id="hmac:abc"))
    assert on_session.url.endswith("/v1/session_annotations")
    assert on_session.body["data"][0]["session_id"] == "hmac:abc"
