"""What tracing a LangGraph agent costs: spanguard against no tracing, a floor, and peers.

One deterministic ReAct agent (a fake chat model, 2 tools, 10 tool steps per
run, no network) runs in one process under each configuration, in alternating
blocks so that machine noise hits them all alike:

  (a) no callbacks
  (b) floor: a minimal hand-written handler, one span per callback, no attributes
  (c) spanguard's SpanguardCallbackHandler
  (h) the same with a ``LoopBudget`` policy (guard checks before and after every
      model call, the decision as a span event; a limit never reached)
  (d) OpenInference's LangChainInstrumentor
  (e) Langfuse's LangChain CallbackHandler (v5, OTel-based), export going nowhere
  (f) the official OpenTelemetry GenAI LangChain instrumentation
      (``opentelemetry-instrumentation-genai-langchain``), if installed
  (g) ``opentelemetry-instrumentation-langchain`` from PyPI, which is
      Traceloop/OpenLLMetry's package of that name, if installed. Its
      ``uninstrument()`` leaves its handler in place (every later run is still
      traced), so it cannot alternate: it runs after all the others, enabled once.

Every configuration writes to the same kind of exporter, which counts spans and
discards them. Printed per configuration: median CPU time per run, time added over
(a), spans per run and peak traced memory for a block of runs; then the ratios
of spanguard's added time to the floor's and to OpenInference's.

Many short alternating blocks and the median of their means: on a shared
machine a burst of load then spoils a few blocks of every configuration
instead of all blocks of one. The whole alternation is repeated (``--repetitions``,
5 by default) and the ratio to the floor reported for each repetition and as their
median, which is the figure the target applies to (<= 1.25x).

Run: ``python benchmarks/langgraph_overhead.py [--runs 3 --rounds 40 --repetitions 5
--only abc]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

TOOL_STEPS = 10


class DiscardingExporter(SpanExporter):
    """Counts spans and drops them: the export cost every configuration shares."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class BenchModel(BaseChatModel):
    """Calls ``add`` and ``multiply`` alternately TOOL_STEPS times, then answers."""

    model: str = "gpt-4o-mini"
    temperature: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "bench-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature}

    def bind_tools(self, tools: Any, **kwargs: Any) -> BenchModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        done = sum(1 for m in messages if isinstance(m, ToolMessage))
        usage = {"input_tokens": 40 * len(messages), "output_tokens": 12,
                 "total_tokens": 40 * len(messages) + 12}
        if done < TOOL_STEPS:
            name = "add" if done % 2 == 0 else "multiply"
            message = AIMessage(content="", tool_calls=[
                {"name": name, "args": {"a": done, "b": 2}, "id": f"call_{done}"}],
                usage_metadata=usage,  # type: ignore[arg-type]
                response_metadata={"model_name": self.model, "finish_reason": "tool_calls"})
        else:
            message = AIMessage(content="done", usage_metadata=usage,  # type: ignore[arg-type]
                                response_metadata={"model_name": self.model,
                                                   "finish_reason": "stop"})
        return ChatResult(generations=[ChatGeneration(message=message)])


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def build_agent() -> Any:
    model = BenchModel()

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([add, multiply]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


class FloorHandler(BaseCallbackHandler):
    """(b): one span per callback, parent by run id, nothing else: the least any tracer does."""

    run_inline = True

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._spans: dict[UUID, trace.Span] = {}

    def _start(self, name: str, run_id: UUID, parent_run_id: UUID | None) -> None:
        parent = self._spans.get(parent_run_id) if parent_run_id else None
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        self._spans[run_id] = self._tracer.start_span(name, ctx)

    def _end(self, run_id: UUID) -> None:
        span = self._spans.pop(run_id, None)
        if span is not None:
            span.end()

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._start(kwargs.get("name") or "chain", run_id, parent_run_id)

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._start("chat", run_id, parent_run_id)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._start("tool", run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)


class Config:
    """One configuration: how to enable it around a block of runs, and its span sink."""

    def __init__(self, key: str, label: str, callbacks: list[Any],
                 exporter: DiscardingExporter, flush: Callable[[], None] | None = None,
                 enable: Callable[[], None] | None = None,
                 disable: Callable[[], None] | None = None, sticky: bool = False) -> None:
        self.key, self.label, self.callbacks, self.exporter = key, label, callbacks, exporter
        self.flush = flush or (lambda: None)
        self.enable = enable or (lambda: None)
        self.disable = disable or (lambda: None)
        self.sticky = sticky  # cannot be switched off again: measured last, not alternated
        self.enabled = False
        self.times: list[float] = []
        self.runs = 0
        self.spans = 0
        self.peak_kib = 0.0


def _provider(exporter: DiscardingExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def build_configs(only: set[str] | None) -> list[Config]:
    from spanguard.guardrails import LoopBudget, Policy
    from spanguard.plugins.langchain import SpanguardCallbackHandler

    configs = [Config("a", "no callbacks", [], DiscardingExporter())]
    floor_exporter = DiscardingExporter()
    configs.append(Config("b", "floor (1 span per callback)",
                          [FloorHandler(_provider(floor_exporter).get_tracer("floor"))],
                          floor_exporter))
    sg_exporter = DiscardingExporter()
    configs.append(Config("c", "spanguard",
                          [SpanguardCallbackHandler(tracer_provider=_provider(sg_exporter))],
                          sg_exporter))
    budget_exporter = DiscardingExporter()
    budget = Policy(loop_budget=LoopBudget(max_input_tokens=10**9))
    configs.append(Config("h", "spanguard with a LoopBudget policy",
                          [SpanguardCallbackHandler(tracer_provider=_provider(budget_exporter),
                                                    policy=budget)],
                          budget_exporter))
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor

        oi_exporter = DiscardingExporter()
        oi_provider = _provider(oi_exporter)
        oi = LangChainInstrumentor()
        configs.append(Config("d", "OpenInference LangChainInstrumentor", [], oi_exporter,
                              enable=lambda: oi.instrument(tracer_provider=oi_provider),
                              disable=oi.uninstrument))
    except ImportError:
        print("(d) skipped: openinference-instrumentation-langchain is not installed")
    try:
        from langfuse import Langfuse
        from langfuse.langchain import CallbackHandler as LangfuseHandler

        lf_exporter = DiscardingExporter()
        lf_provider = TracerProvider()
        client = Langfuse(public_key="pk-lf-bench", secret_key="sk-lf-bench",
                          base_url="http://127.0.0.1:9", tracer_provider=lf_provider,
                          span_exporter=lf_exporter, flush_at=512)
        configs.append(Config("e", "Langfuse CallbackHandler (v5)",
                              [LangfuseHandler(public_key="pk-lf-bench")], lf_exporter,
                              flush=client.flush))
    except ImportError:
        print("(e) skipped: langfuse is not installed")
    try:
        from opentelemetry.instrumentation.genai.langchain import (
            LangChainInstrumentor as OtelInstrumentor,
        )

        og_exporter = DiscardingExporter()
        og_provider = _provider(og_exporter)
        og = OtelInstrumentor()
        configs.append(Config("f", "OTel GenAI LangChain instrumentation (official)", [],
                              og_exporter,
                              enable=lambda: og.instrument(tracer_provider=og_provider),
                              disable=og.uninstrument))
    except ImportError:
        print("(f) skipped: opentelemetry-instrumentation-genai-langchain is not installed")
    try:
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        tl_exporter = DiscardingExporter()
        tl_provider = _provider(tl_exporter)
        tl = LangchainInstrumentor()
        configs.append(Config("g", "opentelemetry-instrumentation-langchain (Traceloop)", [],
                              tl_exporter,
                              enable=lambda: tl.instrument(tracer_provider=tl_provider),
                              sticky=True))
    except ImportError:
        print("(g) skipped: opentelemetry-instrumentation-langchain is not installed")
    return [c for c in configs if only is None or c.key in only]


def run_block(graph: Any, config: Config, runs: int) -> float:
    """CPU seconds per run over one block (a batching exporter's flush included).

    Process CPU time, not wall time: the machine is shared, and CPU time is what
    tracing costs; it includes the work of an exporter's background thread.
    """
    inputs = {"messages": [HumanMessage("compute")]}
    options: Any = {"callbacks": config.callbacks} if config.callbacks else {}
    if not config.enabled:
        config.enable()
        config.enabled = True
    try:
        start = time.process_time()
        for _ in range(runs):
            graph.invoke(inputs, options)
        config.flush()
        elapsed = time.process_time() - start
    finally:
        if not config.sticky:
            config.disable()
            config.enabled = False
    return elapsed / runs


def measure_block(graph: Any, config: Config, runs: int) -> None:
    before = config.exporter.count
    config.times.append(run_block(graph, config, runs))
    config.spans += config.exporter.count - before
    config.runs += runs


def measure_memory(graph: Any, config: Config, runs: int) -> float:
    """Peak traced allocation (KiB) while running one block."""
    run_block(graph, config, 1)
    gc.collect()
    tracemalloc.start()
    try:
        run_block(graph, config, runs)
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per block")
    parser.add_argument("--rounds", type=int, default=40, help="alternating rounds")
    parser.add_argument("--repetitions", type=int, default=5,
                        help="times the whole alternation is repeated")
    parser.add_argument("--only", default=None, help="configuration letters, e.g. abc")
    args = parser.parse_args(argv)
    graph = build_agent()
    configs = build_configs(set(args.only) if args.only else None)
    assert otel_context.get_current() == {}, "benchmark must start with an empty context"
    alternating = [c for c in configs if not c.sticky]
    for config in alternating:  # warm-up: imports, caches, first-call costs
        run_block(graph, config, 2)
    ratios: list[float] = []
    for _ in range(args.repetitions):
        first = {config.key: len(config.times) for config in configs}
        for _ in range(args.rounds):
            for config in alternating:
                measure_block(graph, config, args.runs)
        added = _added(configs, first)
        if "c" in added and added.get("b", 0) > 0:
            ratios.append(added["c"] / added["b"])
    for config in alternating:
        config.peak_kib = measure_memory(graph, config, args.runs)
    for config in configs:
        if config.sticky:
            run_block(graph, config, 2)
            for _ in range(args.rounds * args.repetitions):
                measure_block(graph, config, args.runs)
            config.peak_kib = measure_memory(graph, config, args.runs)
    base = statistics.median(configs[0].times) if configs[0].key == "a" else 0.0
    print(f"LangGraph ReAct agent, {TOOL_STEPS} tool steps per run; {args.repetitions} "
          f"repetitions x {args.rounds} rounds x {args.runs} runs per configuration, "
          f"alternating; medians of block means; load average {os.getloadavg()[0]:.2f}")
    print(f"{'':3}{'configuration':54}{'ms/run':>9}{'added ms':>10}{'spans/run':>11}"
          f"{'peak KiB':>10}")
    added: dict[str, float] = {}
    for config in configs:
        per_run = statistics.median(config.times) * 1000
        added[config.key] = per_run - base * 1000
        print(f"({config.key}) {config.label:52}{per_run:9.2f}{added[config.key]:10.2f}"
              f"{config.spans / config.runs:11.1f}{config.peak_kib:10.0f}")
    if ratios:
        each = " ".join(f"{ratio:.2f}x" for ratio in ratios)
        print(f"spanguard added / floor added:         {statistics.median(ratios):.2f}x "
              f"(median of {each}; target <= 1.25x)")
    if "h" in added and "c" in added and added["c"] > 0:
        print(f"with a LoopBudget / without:           {added['h'] / added['c']:.2f}x "
              f"(+{(added['h'] - added['c']) / (TOOL_STEPS + 1) * 1000:.0f} us per model call)")
    if "c" in added and "d" in added and added["d"] > 0:
        print(f"spanguard added / OpenInference added: {added['c'] / added['d']:.2f}x "
              "(target <= 0.2x)")
    return 0


def _added(configs: list[Config], first: dict[str, int]) -> dict[str, float]:
    """Median ms per run over no callbacks, from each configuration's blocks since ``first``."""
    medians = {c.key: statistics.median(c.times[first[c.key]:]) for c in configs
               if len(c.times) > first[c.key]}
    base = medians.get("a", 0.0)
    return {key: (value - base) * 1000 for key, value in medians.items()}


if __name__ == "__main__":
    raise SystemExit(main())
