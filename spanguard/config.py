"""``spanguard.configure()``: providers and exporters from arguments and environment.

Precedence: explicit arguments, then environment (``OTEL_*``, ``SPANGUARD_*``),
then defaults. The default is the local embedded store and nothing remote. The
global tracer provider is left alone unless ``set_global=True``: a library that
silently replaces an application's provider breaks that application's tracing.

Telemetry fails open: an unusable store or exporter setting is reported (one
warning naming the file or variable, and ``handle.problems``) and skipped; the
rest of the configuration still works. ``strict=True`` raises instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from spanguard.errors import ConfigError, StoreError
from spanguard.exporters.console import ConsoleTreeExporter
from spanguard.exporters.failopen import FailOpenExporter
from spanguard.exporters.local import LocalStoreExporter
from spanguard.exporters.otlp import (
    OtlpTarget,
    build_exporter,
    langfuse_target,
    phoenix_target,
    target_from_env,
)
from spanguard.hashing import KeyedHasher, load_or_create_key
from spanguard.pricing import PriceTable
from spanguard.store import TraceStore

logger = logging.getLogger("spanguard")

DEFAULT_HOME = ".spanguard"
DEFAULT_SERVICE_NAME = "spanguard-agent"
Preset = Literal["phoenix", "langfuse"]


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """``home`` argument, else ``SPANGUARD_HOME``, else ``./.spanguard``."""
    if home is not None:
        return Path(home)
    return Path(os.environ.get("SPANGUARD_HOME") or DEFAULT_HOME)


@dataclass
class SpanguardHandle:
    """What :func:`configure` built; pass ``tracer_provider`` to the plugins."""

    tracer_provider: TracerProvider
    hasher: KeyedHasher
    prices: PriceTable
    home: Path
    store: TraceStore | None
    policy_path: Path | None
    exporters: list[FailOpenExporter] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def dropped_spans(self) -> int:
        return sum(exporter.dropped for exporter in self.exporters)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.tracer_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop every exporter; safe to call twice."""
        self.tracer_provider.shutdown()
        if self.dropped_spans:
            logger.warning("spanguard: %d span(s) could not be exported: %s",
                           self.dropped_spans,
                           "; ".join(f"{e.destination}: {e.last_error}"
                                     for e in self.exporters if e.dropped))

    def __enter__(self) -> SpanguardHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


_current: SpanguardHandle | None = None
_current_lock = threading.Lock()


def configure(
    *,
    service_name: str | None = None,
    home: str | os.PathLike[str] | None = None,
    local_store: bool = True,
    otlp_endpoint: str | None = None,
    otlp_headers: dict[str, str] | None = None,
    preset: Preset | None = None,
    langfuse_host: str | None = None,
    langfuse_public_key: str | None = None,
    langfuse_secret_key: str | None = None,
    console: bool = False,
    policy: str | os.PathLike[str] | None = None,
    prices: str | os.PathLike[str] | None = None,
    hash_key: bytes | str | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    exporters: Sequence[SpanExporter] = (),
    set_global: bool = False,
    strict: bool = False,
) -> SpanguardHandle:
    """Build a tracer provider with spanguard's exporters and return its handle.

    ``exporters`` are extra destinations (wrapped fail-open and batched);
    ``span_processors`` are added first, in order (e.g. a redacting or sampling
    processor that must see spans before any exporter).
    """
    problems: list[str] = []

    def problem(exc: ConfigError | StoreError) -> None:
        if strict:
            raise exc
        problems.append(str(exc))
        logger.warning("spanguard: %s; telemetry continues without it", exc)

    home_path = resolve_home(home)
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    handle_exporters: list[FailOpenExporter] = []
    for processor in span_processors:
        provider.add_span_processor(processor)

    def add(exporter: SpanExporter, destination: str, batch: bool = True) -> None:
        wrapped = FailOpenExporter(exporter, destination)
        handle_exporters.append(wrapped)
        provider.add_span_processor(BatchSpanProcessor(wrapped) if batch
                                    else SimpleSpanProcessor(wrapped))

    store: TraceStore | None = None
    if local_store:
        try:
            store = TraceStore.in_home(home_path)
            add(LocalStoreExporter(store), f"local store {store.path}")
        except StoreError as exc:
            problem(exc)

    for target in _otlp_targets(otlp_endpoint, otlp_headers, preset, langfuse_host,
                                langfuse_public_key, langfuse_secret_key, problem):
        try:
            add(build_exporter(target), target.describe())
        except ConfigError as exc:
            problem(exc)
    for extra in exporters:
        add(extra, type(extra).__name__)
    if console:
        add(ConsoleTreeExporter(), "console", batch=False)

    price_table = PriceTable.default()
    prices_path = prices if prices is not None else os.environ.get("SPANGUARD_PRICES")
    if prices_path:
        try:
            price_table = PriceTable.load(os.fspath(prices_path), base=price_table)
        except ConfigError as exc:
            problem(exc)

    hasher = _hasher(hash_key, home_path, problems)
    policy_value = policy if policy is not None else os.environ.get("SPANGUARD_POLICY")
    handle = SpanguardHandle(
        tracer_provider=provider, hasher=hasher, prices=price_table, home=home_path,
        store=store, policy_path=Path(policy_value) if policy_value else None,
        exporters=handle_exporters, problems=problems,
    )
    if set_global:
        trace.set_tracer_provider(provider)
    global _current
    with _current_lock:
        _current = handle
    return handle


def current() -> SpanguardHandle:
    """The handle of the last :func:`configure` call, configuring defaults on first use.

    Plugins created without a ``tracer_provider`` use this, so adding one callback
    is enough to see traces in the local store.
    """
    global _current
    with _current_lock:
        handle = _current
    if handle is not None:
        return handle
    return configure()


def configured() -> SpanguardHandle | None:
    """The handle of the last :func:`configure` call, or None; never configures.

    For plugins given an explicit provider: they can still use the app's prices
    and hasher when it configured spanguard, without creating a local store.
    """
    with _current_lock:
        return _current


def resolve_tracer_provider(explicit: trace.TracerProvider | None) -> trace.TracerProvider:
    """Explicit provider, else an SDK provider the app set globally, else ours."""
    if explicit is not None:
        return explicit
    if _current is not None:
        return _current.tracer_provider
    global_provider = trace.get_tracer_provider()
    if isinstance(global_provider, TracerProvider):
        return global_provider
    return current().tracer_provider


def _otlp_targets(endpoint: str | None, headers: dict[str, str] | None, preset: Preset | None,
                  lf_host: str | None, lf_public: str | None, lf_secret: str | None,
                  report: Callable[[ConfigError], None]) -> list[OtlpTarget]:
    targets: list[OtlpTarget] = []
    try:
        if preset == "phoenix":
            targets.append(phoenix_target(endpoint))
        elif preset == "langfuse":
            targets.append(langfuse_target(lf_host, lf_public, lf_secret))
        elif preset is not None:
            raise ConfigError("preset", f"unknown preset {preset!r}",
                              "use 'phoenix' or 'langfuse'")
        elif endpoint:
            targets.append(OtlpTarget(endpoint=endpoint, headers=dict(headers or {})))
        else:
            from_env = target_from_env()
            if from_env is not None:
                targets.append(from_env)
    except ConfigError as exc:
        report(exc)
    return targets


def _hasher(hash_key: bytes | str | None, home: Path, problems: list[str]) -> KeyedHasher:
    if hash_key is not None:
        key = hash_key.encode("utf-8") if isinstance(hash_key, str) else hash_key
        if len(key) < 16:
            raise ConfigError("hash_key", "must be at least 16 bytes",
                              "use secrets.token_hex(16) or longer")
        return KeyedHasher(key)
    key, issue = load_or_create_key(home)
    if issue:
        problems.append(issue)
        logger.warning("spanguard: %s", issue)
    return KeyedHasher(key)
