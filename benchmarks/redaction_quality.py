"""Redaction quality and cost: recall and false positives per detector, cost per 2 KB message.

Quality, on the test corpus (tests/governance/redaction_corpus.py): for each
detector, the share of its positives redacted with its own placeholder
(recall), and the benign texts (code, UUIDs, timestamps, hashes, versions,
prices, order numbers...) it redacted (false positives).

Cost, on the exporter thread (RedactingExporter.redact_span, as configure()
wires it): a span without content (passed through), and 2 KB messages of four
shapes (prose without PII, prose with three PII items, a digit-heavy JSON tool
result, code), each seen for the first time: the memo that spares a message met
again in a run is emptied before each pass. The configurations alternate within
the run; medians of the rounds, each a ratio to the built-in detectors. With the
extras installed, detect-secrets' rules and Presidio (with a rule-based spaCy
pipeline built here: a lower bound, a statistical model costs more) are
measured too.

Usage: python benchmarks/redaction_quality.py [--rounds R] [--messages N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.governance corpus

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from spanguard import semconv as sc
from spanguard.attributes import model_attributes
from spanguard.exporters.redacting import RedactingExporter
from spanguard.redaction import Redactor
from spanguard.redaction.memo import RedactionMemo
from tests.governance.redaction_corpus import benign, found, positives

Redact = Callable[[str], tuple[str, int]]
SIZE = 2048


def quality(name: str, redact: Redact) -> None:
    hits: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for positive in positives():
        hits[positive.kind][0] += found(redact(positive.text)[0], positive)
        hits[positive.kind][1] += 1
    items = benign()
    flagged_by: Counter[str] = Counter()
    flagged = 0
    for _, text in items:
        redacted, count = redact(text)
        if count:
            flagged += 1
            for kind in {part.split("]")[0] for part in redacted.split("[REDACTED:")[1:]}:
                flagged_by[kind] += 1
    print(f"-- {name}: recall per detector; false positives on {len(items)} benign texts")
    print(f"   {'detector':24} {'positives':>9} {'recall':>8} {'benign FP':>9}")
    for kind in sorted(set(hits) | set(flagged_by)):
        found_, total = hits.get(kind, [0, 0])
        recall = f"{found_ / total:8.1%}" if total else "       -"
        print(f"   {kind:24} {total:9d} {recall} {flagged_by[kind]:9d}")
    all_found = sum(h[0] for h in hits.values())
    all_total = sum(h[1] for h in hits.values())
    print(f"   {'ALL':24} {all_total:9d} {all_found / all_total:8.1%} {flagged:9d}"
          f"  (false-positive rate {flagged / len(items):.2%})")


def messages(count: int) -> dict[str, list[str]]:
    """2 KB messages of four shapes, ``count`` of each (varied so no cache helps)."""
    prose = ("The quarterly review covered onboarding, the support backlog and the plan for "
             "the next release. Customers asked for faster answers and clearer invoices; the "
             "team agreed to publish a weekly summary and to revisit the roadmap in March. ")
    pii = ("Please update the shipping address for customer jane.roe@example.com, phone "
           "+1 415 555 0100, card 4111 1111 1111 1111. ")
    code = ("def handler(event, context):\n    items = event.get('items', [])\n    total = "
            "sum(i['price'] * i['qty'] for i in items)\n    return {'statusCode': 200, "
            "'body': json.dumps({'total': round(total, 2)})}\n")
    shapes: dict[str, list[str]] = {"prose": [], "prose + 3 PII": [], "JSON numbers": [],
                                    "code": []}
    for i in range(count):
        shapes["prose"].append((f"[{i}] " + prose * 20)[:SIZE])
        shapes["prose + 3 PII"].append((f"[{i}] " + pii + prose * 20)[:SIZE])
        rows = [{"order": f"ORD-2024-{i:03d}{n:03d}", "sku": 100_000 + n, "qty": n % 7 + 1,
                 "price": round(9.99 + n * 1.37, 2), "ts": f"2024-03-{n % 28 + 1:02d}T1{n % 10}"
                 f":0{n % 6}:00Z", "id": f"{n:08x}-{i:04x}"} for n in range(40)]
        shapes["JSON numbers"].append(json.dumps(rows)[:SIZE])
        shapes["code"].append((f"# {i}\n" + code * 20)[:SIZE])
    return shapes


def content_span(text: str) -> ReadableSpan:
    sink = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(sink))
    provider.get_tracer("bench").start_span("chat m", attributes={
        **model_attributes("m"), sc.OI_INPUT_VALUE: text}).end()
    return sink.get_finished_spans()[0]


def per_span_us(exporter: RedactingExporter, redactor: Redactor, spans: list[ReadableSpan],
                repeat: int) -> float:
    """First-sight cost: the redactor's memo is emptied before each pass, so every
    message is scanned (a message met again in a run costs a memo lookup instead)."""
    elapsed = 0.0
    for _ in range(repeat):
        redactor.memo = RedactionMemo()
        start = time.perf_counter()
        for span in spans:
            exporter.redact_span(span)
        elapsed += time.perf_counter() - start
    return elapsed / (repeat * len(spans)) * 1e6


def cost(redactors: dict[str, Redactor], rounds: int, count: int) -> None:
    sink = InMemorySpanExporter()
    exporters = {name: RedactingExporter(sink, redactor) for name, redactor in redactors.items()}
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(sink))
    provider.get_tracer("bench").start_span("chat m", attributes=model_attributes("m")).end()
    bare = sink.get_finished_spans()[-1]
    shapes = {"span without content": [bare],
              **{f"2 KB {shape}": [content_span(text) for text in texts]
                 for shape, texts in messages(count).items()}}
    names = list(exporters)
    print(f"-- cost per span on the exporter thread (µs, median of {rounds} rounds; "
          f"ratio to the built-in detectors)")
    print("   " + f"{'message':24}" + "".join(f"{name:>26}" for name in names))
    for shape, spans in shapes.items():
        repeat = 2000 if shape == "span without content" else max(1, 200 // len(spans))
        runs: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name in names:  # alternate configurations within each round
                runs[name].append(per_span_us(exporters[name], redactors[name], spans, repeat))
        medians = {name: statistics.median(values) for name, values in runs.items()}
        base = medians[names[0]]
        cells = "".join(f"{medians[name]:16.1f} (x{medians[name] / base:5.2f})" for name in names)
        print(f"   {shape:24}{cells}")


def ruler_pipeline() -> str:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([
        {"label": "PERSON", "pattern": [{"LOWER": "jane"}, {"LOWER": "roe"}]}])
    path = Path(tempfile.mkdtemp()) / "ruler-en"
    nlp.to_disk(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=50, help="messages of each shape")
    args = parser.parse_args()

    now = Redactor()
    quality("built-in detectors", now.redact)
    redactors: dict[str, Redactor] = {"built-in": now}
    if importlib.util.find_spec("detect_secrets") is not None:
        from spanguard.redaction.detect_secrets_rules import DetectSecretsRules

        with_rules = Redactor(recognizers=[DetectSecretsRules()])
        quality("now + detect-secrets rules", with_rules.redact)
        redactors["now + detect-secrets"] = with_rules
    if importlib.util.find_spec("presidio_analyzer") is not None:
        from spanguard.redaction.ner import PresidioRecognizer

        redactors["now + Presidio (ruler)"] = Redactor(
            recognizers=[PresidioRecognizer(ruler_pipeline())])
    cost(redactors, args.rounds, args.messages)


if __name__ == "__main__":
    main()
