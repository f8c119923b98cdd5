"""User outcomes as the backends' own feedback records: Langfuse scores, Phoenix annotations.

A ``user_outcome`` span is in the run's trace for every backend, but Langfuse's
evaluators and dashboards read *scores* and Phoenix's read *annotations*, which
neither builds from spans. With the ``langfuse`` or ``phoenix`` preset configured,
:func:`spanguard.record_outcome` also sends one through the backend's public API:

- Langfuse: ``POST {host}/api/public/scores`` with the project's Basic auth, the body
  ``PostScoresBody`` validates (``packages/shared/src/features/scores``): a categorical
  ``user_outcome`` score (the action) and, with a rating, a numeric ``user_rating``,
  each on the trace (``traceId``, the run's root span as ``observationId``) or, with
  only a conversation id, on the session (``sessionId``); the redacted feedback is
  the ``comment``; ``id`` is derived from the outcome span, so a retried request
  updates the score instead of adding one.
- Phoenix: ``POST {base}/v1/trace_annotations`` (or ``/v1/session_annotations``) with a
  ``HUMAN`` annotation named ``user_outcome``: the action as ``label``, the rating as
  ``score``, the feedback as ``explanation``, the outcome span's id as ``identifier``
  (Phoenix upserts on it). Phoenix queues an annotation for a trace it has not stored
  yet and retries, so the run's spans may still be on their way.

Requests go out on one background thread (the caller never waits for a backend),
retried with backoff on connection errors, 429 and 5xx; a request that still fails
is logged once per destination and counted in ``OutcomeDelivery.failed``.
``handle.force_flush()`` and ``shutdown()`` wait for what is queued.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["LangfuseScores", "OutcomeDelivery", "OutcomeRecord", "PhoenixAnnotations"]

logger = logging.getLogger("spanguard.outcomes")

OUTCOME_NAME = "user_outcome"
RATING_NAME = "user_rating"
_TIMEOUT_SECONDS = 5.0
_ATTEMPTS = 5
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class OutcomeRecord:
    """One recorded outcome, as the backends need it (ids in hex, feedback redacted)."""

    action: str
    outcome_span_id: str
    trace_id: str | None = None
    run_span_id: str | None = None  # the span the outcome is about (the run's root)
    session_id: str | None = None
    rating: float | None = None
    feedback: str | None = None


@dataclass(frozen=True)
class Request:
    """One HTTP request to make: where, with which headers, what body."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]


class Destination(Protocol):
    name: str

    def requests(self, record: OutcomeRecord) -> list[Request]: ...


class LangfuseScores:
    """Langfuse's public scores API for one project (its key pair)."""

    name = "langfuse"

    def __init__(self, host: str, authorization: str, environment: str | None = None) -> None:
        self.url = host.rstrip("/") + "/api/public/scores"
        self.headers = {"Authorization": authorization, "Content-Type": "application/json"}
        self.environment = environment

    @classmethod
    def with_keys(cls, host: str, public_key: str, secret_key: str,
                  environment: str | None = None) -> LangfuseScores:
        """Basic auth from the project's key pair, as Langfuse's public API takes it."""
        token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
        return cls(host, f"Basic {token}", environment)

    def requests(self, record: OutcomeRecord) -> list[Request]:
        target: dict[str, Any] = {}
        if record.trace_id is not None:
            target["traceId"] = record.trace_id
            if record.run_span_id is not None:
                target["observationId"] = record.run_span_id
        elif record.session_id is not None:
            target["sessionId"] = record.session_id
        else:
            return []
        common: dict[str, Any] = {**target,
                                  "metadata": {"source": "spanguard",
                                               "outcome_span_id": record.outcome_span_id}}
        if self.environment:
            common["environment"] = self.environment
        if record.feedback:
            common["comment"] = record.feedback
        bodies = [{"id": f"spanguard-{record.outcome_span_id}-{OUTCOME_NAME}",
                   "name": OUTCOME_NAME, "dataType": "CATEGORICAL", "value": record.action,
                   **common}]
        if record.rating is not None:
            bodies.append({"id": f"spanguard-{record.outcome_span_id}-{RATING_NAME}",
                           "name": RATING_NAME, "dataType": "NUMERIC",
                           "value": record.rating, **common})
        return [Request(self.url, self.headers, body) for body in bodies]


class PhoenixAnnotations:
    """Phoenix's REST annotations API (``/v1/trace_annotations``, ``/v1/session_annotations``)."""

    name = "phoenix"

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def requests(self, record: OutcomeRecord) -> list[Request]:
        result: dict[str, Any] = {"label": record.action}
        if record.rating is not None:
            result["score"] = record.rating
        if record.feedback:
            result["explanation"] = record.feedback
        annotation: dict[str, Any] = {
            "name": OUTCOME_NAME, "annotator_kind": "HUMAN", "result": result,
            "metadata": {"source": "spanguard", "outcome_span_id": record.outcome_span_id},
            "identifier": f"spanguard-{record.outcome_span_id}"}
        if record.trace_id is not None:
            path, annotation["trace_id"] = "/v1/trace_annotations", record.trace_id
        elif record.session_id is not None:
            path, annotation["session_id"] = "/v1/session_annotations", record.session_id
        else:
            return []
        return [Request(self.base + path, self.headers, {"data": [annotation]})]


Send = Callable[[Request], int]


def send(request: Request) -> int:
    """POST the request; the HTTP status (an ``OSError`` when nothing answered)."""
    data = json.dumps(request.body).encode("utf-8")
    http = urllib.request.Request(request.url, data=data, headers=request.headers,
                                  method="POST")
    try:
        with urllib.request.urlopen(http, timeout=_TIMEOUT_SECONDS) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class OutcomeDelivery:
    """Sends outcome records to their destinations from one background thread."""

    def __init__(self, destinations: Sequence[Destination], *, sender: Send = send,
                 backoff_seconds: float = 0.5, max_queue: int = 1024) -> None:
        self.destinations = tuple(destinations)
        self.failed = 0
        self._send = sender
        self._backoff = backoff_seconds
        self._queue: queue.Queue[tuple[str, Request] | None] = queue.Queue(max_queue)
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._stopped = False

    def deliver(self, record: OutcomeRecord) -> None:
        """Queue the record's requests; never blocks, never raises."""
        if self._stopped:
            return
        for destination in self.destinations:
            for request in destination.requests(record):
                try:
                    self._queue.put_nowait((destination.name, request))
                except queue.Full:
                    self._failed(destination.name, "the delivery queue is full")
        self._start()

    def force_flush(self, timeout_seconds: float = 30.0) -> bool:
        """Wait until every queued request has been sent or given up."""
        deadline = time.monotonic() + timeout_seconds
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def shutdown(self, timeout_seconds: float = 30.0) -> None:
        self.force_flush(timeout_seconds)
        self._stopped = True
        worker = self._worker
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout=timeout_seconds)

    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="spanguard-outcomes",
                                                daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._post(*item)
            finally:
                self._queue.task_done()

    def _post(self, name: str, request: Request) -> None:
        problem = ""
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                status = self._send(request)
            except OSError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= status < 300:
                return
            problem = f"HTTP {status}"
            if status not in _RETRY_STATUS:
                break
        self._failed(name, f"{request.url} answered {problem}")

    def _failed(self, name: str, why: str) -> None:
        self.failed += 1
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("spanguard: a user outcome did not reach %s (%s); the outcome "
                           "span is in the trace all the same. Not logged again.", name, why)
