"""Overhead of the LlamaIndex plugin on a real (offline) query, against baselines.

Three configurations over the same index and query engine, measured in
alternating rounds so machine noise hits them alike:

* ``bare``         no instrumentation;
* ``spanguard``    ``spanguard.plugins.llama_index.instrument`` into an SDK
                   provider with an in-memory exporter;
* ``openinference`` OpenInference's ``LlamaIndexInstrumentor`` into the same kind
                   of provider (the usual peer), when installed.

Reports the median time per query and each configuration's ratio to ``bare``.
Run: ``.venv/bin/python benchmarks/bench_llama_index.py [--queries 200 --rounds 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanguard.hashing import KeyedHasher
from spanguard.plugins import llama_index as sg_llama
from spanguard.pricing import PriceTable


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _setup_spanguard() -> Callable[[], None]:
    provider, exporter = _provider()
    sg_llama.instrument(provider, prices=PriceTable.default(), hasher=KeyedHasher(b"b" * 32))

    def teardown() -> None:
        sg_llama.uninstrument()
        exporter.clear()
    return teardown


def _setup_openinference() -> Callable[[], None]:
    from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

    provider, exporter = _provider()
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=provider)

    def teardown() -> None:
        instrumentor.uninstrument()
        exporter.clear()
    return teardown


def _setup_bare() -> Callable[[], None]:
    return lambda: None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    docs = [Document(text=f"Policy {i}: refunds take {i} days.", metadata={"source": "kb"})
            for i in range(20)]
    index = VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=3)

    setups: dict[str, Callable[[], Callable[[], None]]] = {
        "bare": _setup_bare, "spanguard": _setup_spanguard}
    try:
        import openinference.instrumentation.llama_index  # noqa: F401
        setups["openinference"] = _setup_openinference
    except ImportError:
        print("openinference-instrumentation-llama-index not installed: peer skipped")

    for _ in range(20):  # warm caches and lazy imports
        engine.query("warm up")
    samples: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.rounds):
        for name, setup in setups.items():
            teardown = setup()
            try:
                start = time.perf_counter()
                for n in range(args.queries):
                    engine.query(f"how long do refunds take {n}")
                samples[name].append((time.perf_counter() - start) / args.queries)
            finally:
                teardown()

    base = statistics.median(samples["bare"])
    print(f"{args.queries} queries x {args.rounds} alternating rounds; median per query")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"  {name:14s} {median * 1e6:9.1f} us   x{median / base:.2f} of bare")


if __name__ == "__main__":
    main()
