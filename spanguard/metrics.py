"""Metrics derived from finished spans, so every adapter gets them with no extra code.

The span tree already carries everything the dashboards need (seed 002): token
usage and model on model-call spans, tool name and status on tool spans, run
cost and hashed tenant on the run's root. :class:`MetricsSpanProcessor` reads
those attributes (``on_end`` only queues the span for a worker thread;
``on_start`` does nothing) and records:

- ``gen_ai.client.token.usage`` (histogram, ``{token}``): per model call (``chat``,
  ``text_completion``, ``generate_content``, ``embeddings`` spans; never an agent's
  aggregate on its ``invoke_agent`` root), by operation, provider, request/response
  model and ``gen_ai.token.type`` (input/output), with the conventions' buckets;
- ``gen_ai.client.operation.duration`` (histogram, seconds): every span with a
  ``gen_ai.operation.name`` (agent runs, model calls, tools, retrievals), by
  operation, model and ``error.type``, so p50/p95 per operation type works;
- ``agent.tool.call.count`` (counter): by tool and status (ok/error), once per tool
  call: on the agent's ``execute_tool`` span;
- ``mcp.server.operation.duration`` / ``mcp.client.operation.duration`` (histograms,
  seconds, the MCP conventions' buckets): MCP requests as the proxy or
  ``instrument_server`` received them (SERVER spans) or as spanguard sent them (the
  verifier's read-back, CLIENT), by ``mcp.method.name``, tool, ``error.type``,
  protocol version and transport. MCP spans count only here: the server side of a
  tool call the agent already counted is not counted again;
- ``agent.cost.usd`` (counter, USD): run cost on the local root, by agent and
  hashed tenant;
- ``spanguard.holds.pending`` (observable gauge) from the callbacks registered
  with :func:`register_pending_holds`;
- ``spanguard.spans.dropped`` (observable counter, ``{span}``): spans that never
  reached a destination, by destination and ``error.type`` (``queue_full``,
  ``export_failed``, ``shutdown``), from the ledgers given to
  :func:`observe_dropped_spans` (``configure()`` registers its destinations).
- ``spanguard.routing.decisions`` (counter): each routing decision (a span with
  ``spanguard.routing.status``), by ``route_status``, ``routing_reason`` and
  ``user_disclosure_required`` (the fallback-integrity SLO; the labels keep their
  0.x names, which the operations pack's rules use).

Guardrail decisions are counted where they are made, by the Enforcer's
``spanguard.guardrail.decisions`` counter (by guard and decision kind), on the
meter provider :func:`spanguard.config.resolve_meter_provider` picks; user
outcomes by :func:`spanguard.record_outcome` (``agent.user.outcome.count``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from spanguard import semconv as sc

__all__ = ["MetricsSpanProcessor", "observe_dropped_spans", "register_pending_holds"]

logger = logging.getLogger("spanguard.metrics")

# Bucket boundaries the GenAI metric conventions recommend.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)

# Bucket boundaries the MCP metric conventions recommend.
MCP_DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

_TOKEN_INPUT = sc.TokenType.INPUT.value
_TOKEN_OUTPUT = sc.TokenType.OUTPUT.value
_TOOL_OPERATION = sc.OperationName.EXECUTE_TOOL.value
# Operations whose usage is one model call's (an invoke_agent root's is the run's sum).
_MODEL_OPERATIONS = frozenset(op.value for op in (
    sc.OperationName.CHAT, sc.OperationName.TEXT_COMPLETION,
    sc.OperationName.GENERATE_CONTENT, sc.OperationName.EMBEDDINGS))
_MODEL_KEYS = (sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL,
               sc.GEN_AI_RESPONSE_MODEL)
_MCP_KEYS = (sc.MCP_METHOD_NAME, sc.GEN_AI_TOOL_NAME, sc.GEN_AI_OPERATION_NAME,
             sc.MCP_PROTOCOL_VERSION, sc.RPC_RESPONSE_STATUS_CODE, sc.NETWORK_TRANSPORT)

PendingHoldsCallback = Callable[[], int]
_pending_lock = threading.Lock()
_pending_callbacks: dict[int, tuple[PendingHoldsCallback, dict[str, str]]] = {}


def register_pending_holds(callback: PendingHoldsCallback,
                           attributes: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Feed the ``spanguard.holds.pending`` gauge; returns a function that unregisters.

    The holds store (or anything else that knows) registers a callable that
    returns how many approval requests are pending right now; it is called at
    each metric collection, never on the agent's path. A callback that raises
    is skipped for that collection (telemetry fails open).
    """
    key = id(callback)
    with _pending_lock:
        _pending_callbacks[key] = (callback, dict(attributes or {}))

    def unregister() -> None:
        with _pending_lock:
            _pending_callbacks.pop(key, None)

    return unregister


def _observe_pending_holds(options: CallbackOptions) -> Iterable[Observation]:
    with _pending_lock:
        registered = list(_pending_callbacks.values())
    observations = []
    for callback, attributes in registered:
        try:
            observations.append(Observation(int(callback()), attributes))
        except Exception as exc:
            logger.debug("spanguard: pending-holds callback failed: %s", exc)
    return observations


class DropLedger(Protocol):
    """What one destination lost, by reason (a :class:`FailOpenExporter` is one)."""

    kind: str
    dropped_by_reason: dict[str, int]


_drop_lock = threading.Lock()
_drop_ledgers: weakref.WeakKeyDictionary[
    metrics.MeterProvider, list[weakref.ref[DropLedger]]] = weakref.WeakKeyDictionary()


def observe_dropped_spans(meter_provider: metrics.MeterProvider,
                          ledgers: Iterable[DropLedger]) -> None:
    """Report the ledgers' lost spans as ``spanguard.spans.dropped`` on ``meter_provider``.

    An observable counter, read at collection time: a full queue loses spans on
    the agent's thread, where one instrument update per lost span (~10 µs in
    the SDK) would make a flood worse. The instrument is created once per
    provider (the SDK ignores the callbacks of a second registration under the
    same name), and its callback sums every live ledger registered for that
    provider; ledgers are held weakly, so a discarded handle stops reporting.
    """
    with _drop_lock:
        registered = _drop_ledgers.get(meter_provider)
        if registered is None:
            registered = _drop_ledgers[meter_provider] = []
            meter = metrics.get_meter("spanguard", meter_provider=meter_provider)
            meter.create_observable_counter(
                sc.METRIC_SPANS_DROPPED, callbacks=[_dropped_observer(registered)],
                unit="{span}",
                description="Spans that never reached a destination, by reason")
        registered.extend(weakref.ref(ledger) for ledger in ledgers)


def _dropped_observer(registered: list[weakref.ref[DropLedger]]
                      ) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[str, str], int] = {}
        with _drop_lock:
            live = [ledger for ref in registered if (ledger := ref()) is not None]
            registered[:] = [ref for ref in registered if ref() is not None]
        for ledger in live:
            for reason, count in list(ledger.dropped_by_reason.items()):
                key = (ledger.kind, reason)
                totals[key] = totals.get(key, 0) + count
        return [Observation(count, {sc.EXPORT_DESTINATION: kind, sc.ERROR_TYPE: reason})
                for (kind, reason), count in totals.items()]

    return observe


class MetricsSpanProcessor(SpanProcessor):
    """Records the metrics above from each finished span's attributes.

    The OTel Python SDK spends about 10 microseconds per instrument update, and
    a model call updates three; so ``on_end`` only queues the finished span and
    a worker thread records it (within ``interval_seconds``), like the batch
    span processor does for export. ``force_flush`` records everything queued
    before returning. The queue is bounded (``max_queue``); spans past it are
    counted in ``dropped`` and warned about once, never blocking the agent.
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None, *,
                 max_queue: int = 20_000, interval_seconds: float = 0.5) -> None:
        if max_queue < 1 or interval_seconds <= 0:
            raise ValueError("max_queue and interval_seconds must be positive")
        meter = metrics.get_meter("spanguard", meter_provider=meter_provider)
        self._tokens = meter.create_histogram(
            sc.METRIC_GEN_AI_TOKEN_USAGE, unit="{token}",
            description="Tokens used per model call, by token type",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self._duration = meter.create_histogram(
            sc.METRIC_GEN_AI_OPERATION_DURATION, unit="s",
            description="Duration of GenAI operations (agent runs, model and tool calls)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._tools = meter.create_counter(
            sc.METRIC_TOOL_CALL_COUNT, unit="{call}", description="Tool calls by tool and status")
        self._cost = meter.create_counter(
            sc.METRIC_COST_USD, unit="USD", description="Agent run cost by agent and tenant")
        self._routes = meter.create_counter(
            sc.METRIC_ROUTING_DECISIONS, unit="{decision}",
            description="Routing decisions by route status, reason and disclosure")
        self._mcp_server = meter.create_histogram(
            sc.METRIC_MCP_SERVER_OPERATION_DURATION, unit="s",
            description="MCP request duration as observed on the receiver",
            explicit_bucket_boundaries_advisory=MCP_DURATION_BUCKETS)
        self._mcp_client = meter.create_histogram(
            sc.METRIC_MCP_CLIENT_OPERATION_DURATION, unit="s",
            description="MCP request duration as observed on the sender",
            explicit_bucket_boundaries_advisory=MCP_DURATION_BUCKETS)
        meter.create_observable_gauge(
            sc.METRIC_HOLDS_PENDING, callbacks=[_observe_pending_holds], unit="{hold}",
            description="Approval requests waiting for a checker")
        self._max_queue = max_queue
        self._interval = interval_seconds
        self._queue: deque[ReadableSpan] = deque()
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._stopped = False
        self.dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        queued = len(self._queue)
        if queued >= self._max_queue or self._stopped:
            self.dropped += 1
            if self.dropped == 1:
                logger.warning("spanguard: metrics queue full (%d spans) or processor shut "
                               "down; further spans are not counted in metrics "
                               "(MetricsSpanProcessor.dropped). Not logged again.",
                               self._max_queue)
            return
        self._queue.append(span)
        if self._worker is None:
            self._start_worker()
        elif queued > self._max_queue // 2:
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._drain()
        return True

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        worker = self._worker
        if worker is not None:
            worker.join(timeout=5)
        self._drain()

    def _start_worker(self) -> None:
        with self._start_lock:
            if self._worker is not None or self._stopped:
                return
            self._worker = threading.Thread(target=self._run, name="spanguard-metrics",
                                            daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        with self._drain_lock:
            while True:
                try:
                    span = self._queue.popleft()
                except IndexError:
                    return
                try:
                    self._record(span)
                except Exception as exc:  # telemetry never raises into the agent
                    logger.debug("spanguard: metrics from span %s failed: %s", span.name, exc)

    def _record(self, span: ReadableSpan) -> None:
        attrs = span.attributes
        if not attrs:
            return
        if sc.MCP_METHOD_NAME in attrs:
            self._record_mcp(span, attrs)
        else:
            operation = attrs.get(sc.GEN_AI_OPERATION_NAME)
            if operation is not None:
                self._record_operation(span, attrs, operation)
        status = attrs.get(sc.ROUTING_STATUS)
        if status is not None:
            self._routes.add(1, {
                sc.METRIC_LABEL_ROUTE_STATUS: status,
                sc.METRIC_LABEL_ROUTING_REASON: attrs.get(sc.ROUTING_REASON, "unknown"),
                sc.METRIC_LABEL_DISCLOSURE_REQUIRED: bool(
                    attrs.get(sc.ROUTING_DISCLOSURE_REQUIRED))})
        parent = span.parent
        if parent is None or parent.is_remote:
            cost = attrs.get(sc.RUN_TOTAL_COST_USD, attrs.get(sc.COST_USD))
            if isinstance(cost, (int, float)) and cost > 0:
                labels: dict[str, Any] = {}
                agent = attrs.get(sc.GEN_AI_AGENT_NAME)
                if agent is not None:
                    labels[sc.GEN_AI_AGENT_NAME] = agent
                tenant = attrs.get(sc.TENANT_HASH)
                if tenant is not None:
                    labels[sc.TENANT_HASH] = tenant
                self._cost.add(float(cost), labels)

    def _record_operation(self, span: ReadableSpan, attrs: Mapping[str, Any],
                          operation: Any) -> None:
        labels = {key: attrs[key] for key in _MODEL_KEYS if key in attrs}
        error = span.status.status_code is StatusCode.ERROR
        if span.end_time is not None and span.start_time is not None:
            duration_labels = labels
            if error:
                duration_labels = dict(labels)
                duration_labels[sc.ERROR_TYPE] = attrs.get(sc.ERROR_TYPE, "error")
            self._duration.record((span.end_time - span.start_time) / 1e9, duration_labels)
        input_tokens = attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)
        if input_tokens is not None and operation in _MODEL_OPERATIONS:
            self._tokens.record(input_tokens, {**labels, sc.GEN_AI_TOKEN_TYPE: _TOKEN_INPUT})
            output_tokens = attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)
            if output_tokens is not None:
                self._tokens.record(output_tokens,
                                    {**labels, sc.GEN_AI_TOKEN_TYPE: _TOKEN_OUTPUT})
        if operation == _TOOL_OPERATION:
            self._tools.add(1, {sc.GEN_AI_TOOL_NAME: attrs.get(sc.GEN_AI_TOOL_NAME, "unknown"),
                                sc.TOOL_CALL_STATUS: "error" if error else "ok"})

    def _record_mcp(self, span: ReadableSpan, attrs: Mapping[str, Any]) -> None:
        """An MCP request: the server or client duration, never a GenAI or tool count
        (the agent's own span for the same call counts those)."""
        if span.end_time is None or span.start_time is None:
            return
        labels = {key: attrs[key] for key in _MCP_KEYS if key in attrs}
        error = attrs.get(sc.ERROR_TYPE)
        if error is not None:
            labels[sc.ERROR_TYPE] = error
        histogram = self._mcp_server if span.kind is SpanKind.SERVER else self._mcp_client
        histogram.record((span.end_time - span.start_time) / 1e9, labels)
