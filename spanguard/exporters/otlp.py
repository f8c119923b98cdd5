"""OTLP/HTTP exporters and the presets for Phoenix and Langfuse.

The OTLP exporter package is an optional extra (``spanguard[otlp]``); asking for
OTLP without it is a clear configuration error rather than an ImportError deep
in a stack.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from spanguard.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter

    from spanguard.exporters.outcome_api import Destination

PHOENIX_DEFAULT_ENDPOINT = "http://127.0.0.1:6006/v1/traces"
LANGFUSE_DEFAULT_HOST = "https://cloud.langfuse.com"
LANGFUSE_OTLP_PATH = "/api/public/otel/v1/traces"
DEFAULT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class OtlpTarget:
    """Where spans go and with which headers; built from arguments or environment."""

    endpoint: str
    headers: Mapping[str, str]
    name: str = "otlp"

    def describe(self) -> str:
        return f"{self.name} at {self.endpoint}"


def parse_headers(text: str, source: str = "OTEL_EXPORTER_OTLP_HEADERS") -> dict[str, str]:
    """Parse ``k1=v1,k2=v2`` (values URL-encoded) as the OTel spec defines it."""
    headers: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(source, f"malformed entry {item!r}",
                              "expected comma-separated key=value pairs, e.g. "
                              "'authorization=Bearer%20abc,x-team=ml'")
        headers[key.lower()] = unquote(value.strip())
    return headers


def target_from_env(env: Mapping[str, str] | None = None) -> OtlpTarget | None:
    """The OTLP target the standard ``OTEL_EXPORTER_OTLP_*`` variables describe, if any."""
    env = os.environ if env is None else env
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not base:
            return None
        endpoint = base.rstrip("/") + "/v1/traces"
    headers: dict[str, str] = {}
    for var in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        if env.get(var):
            headers.update(parse_headers(env[var], var))
    return OtlpTarget(endpoint=endpoint, headers=headers)


def phoenix_target(endpoint: str | None = None) -> OtlpTarget:
    """Arize Phoenix's OTLP/HTTP collector (``phoenix serve`` listens on 6006)."""
    endpoint = endpoint or os.environ.get("PHOENIX_COLLECTOR_ENDPOINT") or PHOENIX_DEFAULT_ENDPOINT
    if not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return OtlpTarget(endpoint=endpoint, headers={}, name="phoenix")


def langfuse_target(host: str | None = None, public_key: str | None = None,
                    secret_key: str | None = None) -> OtlpTarget:
    """Langfuse's OTLP endpoint with Basic auth from the project's key pair."""
    host = (host or os.environ.get("LANGFUSE_HOST") or os.environ.get("LANGFUSE_BASE_URL")
            or LANGFUSE_DEFAULT_HOST)
    public_key = public_key or os.environ.get("LANGFUSE_PUBLIC_KEY")
    secret_key = secret_key or os.environ.get("LANGFUSE_SECRET_KEY")
    if not public_key or not secret_key:
        raise ConfigError("langfuse preset", "public and secret key are required",
                          "pass public_key=/secret_key= or set LANGFUSE_PUBLIC_KEY and "
                          "LANGFUSE_SECRET_KEY")
    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
    return OtlpTarget(endpoint=host.rstrip("/") + LANGFUSE_OTLP_PATH,
                      headers={"authorization": f"Basic {token}"}, name="langfuse")


def build_exporter(target: OtlpTarget) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(target.describe(), "the OTLP exporter is not installed",
                          "pip install 'spanguard[otlp]'") from exc
    timeout = None if os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") else DEFAULT_TIMEOUT_SECONDS
    return OTLPSpanExporter(endpoint=target.endpoint, headers=dict(target.headers),
                            timeout=timeout)


def metrics_endpoint(target: OtlpTarget) -> str | None:
    """Where a generic OTLP target takes metrics; None for trace-only backends.

    Phoenix and Langfuse ingest traces only, so their presets get no metric
    exporter (it would fail every export). ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``
    overrides the derived ``.../v1/metrics``.
    """
    if target.name != "otlp":
        return None
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if explicit:
        return explicit
    base = target.endpoint.rstrip("/")
    if base.endswith("/v1/traces"):
        base = base[: -len("/v1/traces")]
    return base + "/v1/metrics"


def build_meter_provider(targets: Sequence[OtlpTarget], resource: Resource) -> MeterProvider | None:
    """A MeterProvider exporting over OTLP/HTTP beside the spans, or None without a target.

    The export interval is the SDK's (``OTEL_METRIC_EXPORT_INTERVAL``, default 60 s).
    The metrics SDK is imported only here: without an OTLP target nothing needs it.
    """
    endpoints = [(target, endpoint) for target in targets
                 if (endpoint := metrics_endpoint(target)) is not None]
    if not endpoints:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    readers = []
    for target, endpoint in endpoints:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
        except ImportError as exc:
            raise ConfigError(target.describe(), "the OTLP exporter is not installed",
                              "pip install 'spanguard[otlp]'") from exc
        timeout = None if os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") else DEFAULT_TIMEOUT_SECONDS
        exporter = OTLPMetricExporter(endpoint=endpoint, headers=dict(target.headers),
                                      timeout=timeout)
        readers.append(PeriodicExportingMetricReader(exporter))
    return MeterProvider(metric_readers=readers, resource=resource)


def outcome_destination(target: OtlpTarget, environment: str | None = None
                        ) -> Destination | None:
    """Where a preset's backend takes user outcomes (Langfuse's scores API, Phoenix's
    annotations API, on the same host and with the same auth as its traces); None for a
    generic OTLP target."""
    from spanguard.exporters.outcome_api import LangfuseScores, PhoenixAnnotations

    if target.name == "langfuse" and target.endpoint.endswith(LANGFUSE_OTLP_PATH):
        host = target.endpoint[: -len(LANGFUSE_OTLP_PATH)]
        return LangfuseScores(host, target.headers["authorization"], environment)
    if target.name == "phoenix":
        base = target.endpoint.rstrip("/")
        if base.endswith("/v1/traces"):
            base = base[: -len("/v1/traces")]
        auth = {k: v for k, v in target.headers.items() if k == "authorization"}
        return PhoenixAnnotations(base, auth)
    return None
