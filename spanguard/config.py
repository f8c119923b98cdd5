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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, get_args

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

from spanguard._toml import toml_reader
from spanguard.errors import ConfigError, StoreError
from spanguard.exporters.batching import CountedBatchSpanProcessor, batch_settings
from spanguard.exporters.console import ConsoleTreeExporter
from spanguard.exporters.failopen import FailOpenExporter
from spanguard.exporters.langfuse import LangfuseExporter, LangfuseOptions
from spanguard.exporters.local import LocalStoreExporter
from spanguard.exporters.otlp import (
    OtlpTarget,
    build_exporter,
    build_meter_provider,
    langfuse_target,
    outcome_destination,
    phoenix_target,
    target_from_env,
)
from spanguard.exporters.outcome_api import OutcomeDelivery
from spanguard.exporters.redacting import RedactingExporter
from spanguard.hashing import KeyedHasher, load_or_create_key
from spanguard.home import resolve_home as resolve_home  # re-exported: guardrails use it
from spanguard.metrics import MetricsSpanProcessor, observe_dropped_spans
from spanguard.pricing import PriceTable
from spanguard.redaction import EntityRecognizer, RedactionSettings, Redactor
from spanguard.redaction.settings import parse_redaction_settings
from spanguard.sampling import TailSampler
from spanguard.store import TraceStore

if TYPE_CHECKING:  # the metrics SDK loads only when OTLP metrics are configured
    from opentelemetry.sdk.metrics import MeterProvider

logger = logging.getLogger("spanguard")

DEFAULT_SERVICE_NAME = "spanguard-agent"
Preset = Literal["phoenix", "langfuse"]


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
    redactor: Redactor = field(default_factory=Redactor)
    meter_provider: MeterProvider | None = None
    sampler: TailSampler | None = None
    owns_meter_provider: bool = False
    # Langfuse scores / Phoenix annotations for record_outcome(), with those presets.
    outcomes: OutcomeDelivery | None = None

    @property
    def dropped_spans(self) -> int:
        """Spans that never reached a destination, summed over destinations.

        Export failures, spans refused by a full export queue, and spans still
        queued (or ended) at shutdown; ``exporters[i].dropped_by_reason`` splits
        it per destination. A span lost to two destinations counts twice.
        """
        return sum(exporter.dropped for exporter in self.exporters)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        flushed = self.tracer_provider.force_flush(timeout_millis)
        if self.meter_provider is not None and self.owns_meter_provider:
            flushed = self.meter_provider.force_flush(timeout_millis) and flushed
        if self.outcomes is not None:
            flushed = self.outcomes.force_flush(timeout_millis / 1000) and flushed
        return flushed

    def shutdown(self) -> None:
        """Flush and stop every exporter; safe to call twice."""
        self.tracer_provider.shutdown()
        if self.outcomes is not None:
            self.outcomes.shutdown()
        if self.meter_provider is not None and self.owns_meter_provider:
            self.owns_meter_provider = False
            self.meter_provider.shutdown()
        if self.dropped_spans:
            logger.warning("spanguard: %d span(s) never reached their destination: %s",
                           self.dropped_spans,
                           "; ".join(e.summary() for e in self.exporters if e.dropped))

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
    redaction_patterns: Mapping[str, str] | None = None,
    store_raw_content: bool = False,
    sample_ratio: float | None = None,
    meter_provider: MeterProvider | None = None,
    redaction_phone_regions: Sequence[str] | None = None,
    redaction_detect_secrets: bool | None = None,
    redaction_ner: str | EntityRecognizer | None = None,
    raw_conversation_ids: bool = False,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
    langfuse_attributes: bool | None = None,
    langfuse_environment: str | None = None,
    langfuse_tags: Sequence[str] = (),
) -> SpanguardHandle:
    """Build a tracer provider with spanguard's exporters and return its handle.

    ``exporters`` are extra destinations (wrapped fail-open and batched);
    ``span_processors`` are added first, in order. Each batched destination
    queues up to ``max_queue_size`` spans and exports ``max_export_batch_size``
    at a time (else ``OTEL_BSP_MAX_QUEUE_SIZE`` / ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``,
    else 8192, and 2048 for the local store / 512 for the others); every span a
    destination loses (full queue, failed export, shutdown) is counted in
    ``handle.dropped_spans``.

    Governance (docs/governance.md): every destination gets redacted copies of
    content attributes (built-in detectors plus ``redaction_patterns`` and the
    policy file's ``[redaction] patterns``), except the local store when
    ``store_raw_content=True``; OTLP always gets the redacted form.
    ``redaction_phone_regions`` lists the national phone formats to recognise,
    ``redaction_detect_secrets=True`` adds detect-secrets' rules (``secrets``
    extra), ``redaction_ner`` a Presidio recognizer for names and addresses
    (``ner`` extra: a spaCy model name or path, or a ready recognizer); each
    overrides the policy file's ``[redaction]`` key of the same meaning.
    Conversation/session ids are keyed hashes on every span unless
    ``raw_conversation_ids=True`` (for backends that must show your own ids).
    ``sample_ratio`` (or ``SPANGUARD_SAMPLE_RATIO``) below 1.0 turns on
    outcome-aware tail sampling in front of the exporters. Metrics derived
    from spans go to ``meter_provider``, or, when OTLP is configured, to an
    OTLP metric exporter beside the span exporter.

    ``preset`` (or ``SPANGUARD_PRESET``) ``"langfuse"`` adds Langfuse's own attributes
    (:mod:`spanguard.exporters.langfuse`: time to first token, trace name, input and
    output, tags, environment, governance in the status message) to what the Langfuse
    destination gets, and no other; ``langfuse_attributes=True`` adds them to every
    OTLP destination (a Collector that forwards to Langfuse), ``False`` to none.
    ``langfuse_environment`` (else ``LANGFUSE_TRACING_ENVIRONMENT``) and
    ``langfuse_tags`` go on every observation and trace. With the ``langfuse`` or
    ``phoenix`` preset, :func:`spanguard.record_outcome` also becomes a Langfuse score
    or a Phoenix annotation (:mod:`spanguard.exporters.outcome_api`).
    """
    problems: list[str] = []

    def problem(exc: ConfigError | StoreError) -> None:
        if strict:
            raise exc
        problems.append(str(exc))
        logger.warning("spanguard: %s; telemetry continues without it", exc)

    home_path = resolve_home(home)
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    resource = Resource.create({"service.name": name})
    provider = TracerProvider(resource=resource)
    handle_exporters: list[FailOpenExporter] = []
    export_processors: list[SpanProcessor] = []
    for processor in span_processors:
        provider.add_span_processor(processor)
    policy_value = policy if policy is not None else os.environ.get("SPANGUARD_POLICY")
    redactor = _redactor(policy_value, RedactionSettings(
        patterns=dict(redaction_patterns or {}),
        phone_regions=tuple(redaction_phone_regions) if redaction_phone_regions else None,
        detect_secrets=redaction_detect_secrets,
        ner_model=redaction_ner if isinstance(redaction_ner, str) else None,
    ), None if isinstance(redaction_ner, str) else redaction_ner, problem)

    settings = batch_settings(max_queue_size, max_export_batch_size, report=problem)

    def add(exporter: SpanExporter, destination: str, kind: str, batch: bool = True,
            redact: bool = True) -> None:
        if redact:
            exporter = RedactingExporter(exporter, redactor)
        wrapped = FailOpenExporter(exporter, destination, kind)
        handle_exporters.append(wrapped)
        export_processors.append(
            CountedBatchSpanProcessor(wrapped, settings.for_destination(kind)) if batch
            else SimpleSpanProcessor(wrapped))

    store: TraceStore | None = None
    if local_store:
        try:
            store = TraceStore.in_home(home_path)
            add(LocalStoreExporter(store), f"local store {store.path}", "local",
                redact=not store_raw_content)
        except StoreError as exc:
            problem(exc)

    if preset is None:
        preset = _preset_from_env(problem)
    targets = _otlp_targets(otlp_endpoint, otlp_headers, preset, langfuse_host,
                            langfuse_public_key, langfuse_secret_key, problem)
    langfuse = LangfuseOptions(
        environment=langfuse_environment or os.environ.get("LANGFUSE_TRACING_ENVIRONMENT"),
        release=os.environ.get("LANGFUSE_RELEASE"), tags=tuple(langfuse_tags))
    for target in targets:
        try:
            exporter = build_exporter(target)
            if (target.name == "langfuse" and langfuse_attributes is not False) \
                    or langfuse_attributes:
                exporter = LangfuseExporter(exporter, langfuse)
            add(exporter, target.describe(), target.name)
        except ConfigError as exc:
            problem(exc)
    destinations = [d for d in (outcome_destination(t, langfuse.environment)
                                for t in targets) if d is not None]
    outcomes = OutcomeDelivery(destinations) if destinations else None
    for extra in exporters:
        add(extra, type(extra).__name__, type(extra).__name__)
    if console:
        add(ConsoleTreeExporter(), "console", "console", batch=False,
            redact=not store_raw_content)

    owns_meters = False
    if meter_provider is None:
        try:
            meter_provider = build_meter_provider(targets, resource)
            owns_meters = meter_provider is not None
        except ConfigError as exc:
            problem(exc)
    if meter_provider is not None:
        provider.add_span_processor(MetricsSpanProcessor(meter_provider))
        observe_dropped_spans(meter_provider, handle_exporters)

    sampler: TailSampler | None = None
    ratio = _sample_ratio(sample_ratio, problem)
    if ratio < 1.0 and export_processors:
        sampler = TailSampler(export_processors, ratio)
        provider.add_span_processor(sampler)
    else:
        for export_processor in export_processors:
            provider.add_span_processor(export_processor)

    price_table = PriceTable.default()
    prices_path = prices if prices is not None else os.environ.get("SPANGUARD_PRICES")
    if prices_path:
        try:
            price_table = PriceTable.load(os.fspath(prices_path), base=price_table)
        except ConfigError as exc:
            problem(exc)

    hasher = _hasher(hash_key, home_path, problems, raw_conversation_ids)
    handle = SpanguardHandle(
        tracer_provider=provider, hasher=hasher, prices=price_table, home=home_path,
        store=store, policy_path=Path(policy_value) if policy_value else None,
        exporters=handle_exporters, problems=problems, redactor=redactor,
        meter_provider=meter_provider, sampler=sampler, owns_meter_provider=owns_meters,
        outcomes=outcomes,
    )
    if set_global:
        trace.set_tracer_provider(provider)
        if owns_meters and meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
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


def resolve_meter_provider(explicit: metrics.MeterProvider | None) -> metrics.MeterProvider:
    """Explicit provider, else the one :func:`configure` built or was given, else global."""
    if explicit is not None:
        return explicit
    handle = _current
    if handle is not None and handle.meter_provider is not None:
        return handle.meter_provider
    return metrics.get_meter_provider()


def resolve_hasher(explicit: KeyedHasher | None) -> KeyedHasher:
    """Explicit hasher, else the configured handle's, else the default configuration's.

    The same order the plugins follow, so a conversation id hashed here (by
    :func:`spanguard.record_outcome`, say) matches the one on the run's spans.
    """
    if explicit is not None:
        return explicit
    handle = _current
    return handle.hasher if handle is not None else current().hasher


def current_store() -> TraceStore | None:
    """The local store of the last :func:`configure`, if any (never configures)."""
    handle = _current
    return handle.store if handle is not None else None


def resolve_redactor() -> Redactor:
    """The configured redactor (with the user's patterns), else the built-in one."""
    handle = _current
    return handle.redactor if handle is not None else _DEFAULT_REDACTOR


_DEFAULT_REDACTOR = Redactor()


def _redactor(policy_path: str | os.PathLike[str] | None, arguments: RedactionSettings,
              recognizer: EntityRecognizer | None,
              report: Callable[[ConfigError], None]) -> Redactor:
    """Built-in detectors, tuned by the policy file's ``[redaction]`` table and the arguments.

    The core reads only the ``[redaction]`` table of the policy file (the rest
    belongs to the guardrails); an argument wins over the file (patterns:
    per name). A part that cannot be built is reported and left out; the
    built-in detectors always apply.
    """
    from_file = RedactionSettings()
    if policy_path:
        source = os.fspath(policy_path)
        try:
            with open(source, "rb") as handle:
                table = toml_reader.load(handle).get("redaction")
            if table is not None:
                if not isinstance(table, Mapping):
                    raise ConfigError(source, "[redaction] must be a table")
                from_file = parse_redaction_settings(table, f"{source} [redaction]")
        except OSError as exc:
            report(ConfigError(source, f"cannot read policy file: {exc.strerror or exc}",
                               "check the path given to policy= or SPANGUARD_POLICY"))
        except toml_reader.TOMLDecodeError as exc:
            report(ConfigError(source, f"not valid TOML: {exc}"))
        except ConfigError as exc:
            report(exc)
    patterns = {**from_file.patterns, **arguments.patterns}
    regions = arguments.phone_regions or from_file.phone_regions
    use_detect_secrets = (arguments.detect_secrets if arguments.detect_secrets is not None
                          else from_file.detect_secrets)
    ner_model = arguments.ner_model or from_file.ner_model
    recognizers: list[EntityRecognizer] = []
    if use_detect_secrets:
        try:
            from spanguard.redaction.detect_secrets_rules import DetectSecretsRules

            recognizers.append(DetectSecretsRules())
        except ConfigError as exc:
            report(exc)
    if recognizer is not None:
        recognizers.append(recognizer)
    elif ner_model:
        try:
            from spanguard.redaction.ner import PresidioRecognizer

            recognizers.append(PresidioRecognizer(ner_model))
        except ConfigError as exc:
            report(exc)
    try:
        return Redactor(patterns, phone_regions=regions, recognizers=recognizers)
    except ConfigError as exc:
        report(exc)
    try:
        return Redactor(phone_regions=regions, recognizers=recognizers)
    except ConfigError as exc:
        report(exc)
        return Redactor(recognizers=recognizers)


def _sample_ratio(explicit: float | None, report: Callable[[ConfigError], None]) -> float:
    source = "sample_ratio"
    value: object = explicit
    if value is None:
        value = os.environ.get("SPANGUARD_SAMPLE_RATIO")
        source = "SPANGUARD_SAMPLE_RATIO"
        if not value:
            return 1.0
    try:
        ratio = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        report(ConfigError(source, f"{value!r} is not a ratio between 0 and 1",
                           "e.g. 0.1 keeps every interesting trace and 10% of the rest; "
                           "keeping all traces"))
        return 1.0
    return ratio


def _preset_from_env(report: Callable[[ConfigError], None]) -> Preset | None:
    value = os.environ.get("SPANGUARD_PRESET", "").strip()
    if not value:
        return None
    if value in get_args(Preset):
        return cast(Preset, value)
    report(ConfigError("SPANGUARD_PRESET", f"unknown preset {value!r}",
                       "use 'phoenix' or 'langfuse'"))
    return None


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


def _hasher(hash_key: bytes | str | None, home: Path, problems: list[str],
            raw_conversation_ids: bool) -> KeyedHasher:
    if hash_key is not None:
        key = hash_key.encode("utf-8") if isinstance(hash_key, str) else hash_key
        if len(key) < 16:
            raise ConfigError("hash_key", "must be at least 16 bytes",
                              "use secrets.token_hex(16) or longer")
    else:
        key, issue = load_or_create_key(home)
        if issue:
            problems.append(issue)
            logger.warning("spanguard: %s", issue)
    return KeyedHasher(key, raw_conversation_ids=raw_conversation_ids)
