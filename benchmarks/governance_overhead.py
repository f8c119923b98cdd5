"""Overhead of the governance layer, as ratios against a baseline measured in the same run.

Runs alternate (baseline, variant, baseline, variant, ...) and the median of
each is reported, because the machine is shared. Measured:

1. span creation with no processor vs with MetricsSpanProcessor (agent's thread);
2. span creation with no processor vs with TailSampler(ratio=0.1) (agent's thread);
3. RedactingExporter.redact_span per span, off the agent's thread: a span
   without content (pass-through) and one with a 2 KB prompt holding 3 PII items.

Usage: python benchmarks/governance_overhead.py [--spans N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

from spanguard import semconv as sc
from spanguard.attributes import model_attributes, usage_attributes
from spanguard.exporters.redacting import RedactingExporter
from spanguard.metrics import MetricsSpanProcessor
from spanguard.redaction import Redactor
from spanguard.sampling import TailSampler


class Discard(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        return None


def traced_work(provider: TracerProvider, spans: int) -> float:
    """Microseconds per span for a run shape: one root, model-call children."""
    tracer = provider.get_tracer("bench")
    attrs = {**model_attributes("gpt-4o-mini", "openai"), **usage_attributes(120, 30)}
    start = time.perf_counter()
    for _ in range(spans // 10):
        root = tracer.start_span("invoke_agent bench")
        ctx = set_span_in_context(root)
        for _ in range(9):
            tracer.start_span("chat gpt-4o-mini", ctx, attributes=attrs).end()
        root.end()
    return (time.perf_counter() - start) / spans * 1e6


def alternate(rounds: int, baseline: Callable[[], float], variant: Callable[[], float]
              ) -> tuple[float, float]:
    base, var = [], []
    for _ in range(rounds):
        base.append(baseline())
        var.append(variant())
    return statistics.median(base), statistics.median(var)


def provider_with(*processors: SpanProcessor) -> TracerProvider:
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    plain = provider_with(Discard())
    metered = provider_with(Discard(), MetricsSpanProcessor(
        MeterProvider(metric_readers=[InMemoryMetricReader()])))
    sampled = provider_with(TailSampler([Discard()], 0.1))
    for name, variant in (("metrics processor", metered), ("tail sampler 0.1", sampled)):
        base, var = alternate(args.rounds, lambda: traced_work(plain, args.spans),
                              lambda v=variant: traced_work(v, args.spans))  # type: ignore[misc]
        print(f"{name:22} baseline {base:6.2f} us/span  with {var:6.2f} us/span  "
              f"ratio {var / base:.2f}  (+{var - base:.2f} us)")

    sink = InMemorySpanExporter()
    capture = provider_with()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    capture.add_span_processor(SimpleSpanProcessor(sink))
    tracer = capture.get_tracer("bench")
    tracer.start_span("chat", attributes=model_attributes("m")).end()
    prompt = ("Please update the shipping address for customer jane.roe@example.com, "
              "phone +1 415 555 0100, card 4111 1111 1111 1111. " + "lorem ipsum " * 150)
    tracer.start_span("chat", attributes={**model_attributes("m"),
                                          sc.OI_INPUT_VALUE: prompt}).end()
    no_content, with_content = sink.get_finished_spans()
    redacting = RedactingExporter(sink, Redactor())
    for name, span in (("redact: no content", no_content),
                       (f"redact: {len(prompt)} B prompt", with_content)):
        runs = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(2000):
                redacting.redact_span(span)
            runs.append((time.perf_counter() - start) / 2000 * 1e6)
        print(f"{name:22} {statistics.median(runs):8.2f} us/span (exporter thread)")


if __name__ == "__main__":
    main()
