"""What content capture costs as a run grows, and whether long runs keep their identity.

A deterministic LangGraph ReAct agent (a fake chat model, one tool, no network) runs
10, 50 and 200 tool steps with content capture off and on, in alternating blocks in
one process, exported through the redacting exporter (what every ``configure()``
destination gets) into a sink that counts the bytes of content it receives.
Messages carry text and personal data, so redaction has work to do: a ~1 KB user
prompt with an e-mail address, tool results of ~300 characters with a phone number.
Every run's texts are new (they carry the run's number), so no run is helped by the
redaction memo of the one before.

Printed:

- capture-on added CPU time per step (capture on minus off, divided by the steps)
  at each length, and the 200-step figure over the 10-step one (target: within
  1.5x: linear capture costs the same per step however long the run);
- exported content per run;
- for one 200-step run with capture on: attributes the SDK dropped, chat spans
  missing an identity attribute, flattened content keys the budget left out,
  and warnings the SDK logged (target: 0 identity attributes dropped, 0 warnings).

Run: ``python benchmarks/capture_scaling.py [--steps 10,50,200 --rounds 5]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from spanguard import semconv as sc
from spanguard.exporters.redacting import RedactingExporter
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.redaction import Redactor, is_content_key

IDENTITY = (sc.OPENINFERENCE_SPAN_KIND, sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_REQUEST_MODEL,
            sc.GEN_AI_PROVIDER_NAME, sc.OI_LLM_MODEL_NAME)
PROMPT = ("Please reconcile the March invoices for the account of jane.roe@example.com. "
          + "The ledger lists each payment with its reference, amount and date. " * 14)


class ContentSink(SpanExporter):
    """Counts spans and the characters of content they carry; keeps the last batch's spans."""

    def __init__(self, keep: bool = False) -> None:
        self.content_chars = 0
        self.keep = keep
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            for key, value in (span.attributes or {}).items():
                if isinstance(value, str) and is_content_key(key):
                    self.content_chars += len(value)
            if self.keep:
                self.spans.append(span)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class StepsModel(BaseChatModel):
    """Calls ``lookup`` until the conversation holds ``steps`` tool results, then answers."""

    steps: int = 10
    model: str = "gpt-4o-mini"

    @property
    def _llm_type(self) -> str:
        return "bench-steps"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": 0.0}

    def bind_tools(self, tools: Any, **kwargs: Any) -> StepsModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        done = sum(1 for m in messages if isinstance(m, ToolMessage))
        usage = {"input_tokens": 50 * len(messages), "output_tokens": 20,
                 "total_tokens": 50 * len(messages) + 20}
        if done < self.steps:
            message = AIMessage(content=f"Checking payment {done}.", tool_calls=[
                {"name": "lookup", "args": {"payment": done}, "id": f"call_{done}"}],
                usage_metadata=usage,  # type: ignore[arg-type]
                response_metadata={"model_name": self.model, "finish_reason": "tool_calls"})
        else:
            message = AIMessage(content="All payments reconciled.",
                                usage_metadata=usage,  # type: ignore[arg-type]
                                response_metadata={"model_name": self.model,
                                                   "finish_reason": "stop"})
        return ChatResult(generations=[ChatGeneration(message=message)])


RUN = [0]  # the run's number, in every text it produces


@tool
def lookup(payment: int) -> str:
    """Look a payment up in the ledger."""
    return (f"Run {RUN[0]}. Payment {payment}: 1,250.00 EUR received on "
            f"2026-03-{payment % 28 + 1:02d} from the customer's bank; reference "
            f"INV-{payment:05d}. Call the account owner "
            "on +1 415 555 0100 if the amount differs from the invoice. " * 2)


def build_agent(steps: int) -> Any:
    model = StepsModel(steps=steps)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([lookup]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


def handler(capture: bool, sink: ContentSink) -> SpanguardCallbackHandler:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(sink, Redactor())))
    return SpanguardCallbackHandler(provider, capture_content=capture)


def run_block(graph: Any, steps: int, callback: SpanguardCallbackHandler, runs: int) -> float:
    """CPU seconds per run (the export, redaction included, runs inline)."""
    config = {"callbacks": [callback], "recursion_limit": 2 * steps + 10}
    start = time.process_time()
    for _ in range(runs):
        RUN[0] += 1
        graph.invoke({"messages": [HumanMessage(f"Run {RUN[0]}. {PROMPT}")]}, config)
    return (time.process_time() - start) / runs


def long_run_report(steps: int) -> dict[str, int]:
    """Attribute accounting for one capture-on run of ``steps`` steps."""
    warnings: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record)

    collect = Collect(logging.WARNING)
    otel = logging.getLogger("opentelemetry")
    otel.addHandler(collect)
    try:
        sink = ContentSink(keep=True)
        run_block(build_agent(steps), steps, handler(True, sink), 1)
    finally:
        otel.removeHandler(collect)
    chats = [s for s in sink.spans if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == "chat"]
    return {
        "chat spans": len(chats),
        "attributes dropped by the SDK": sum(s.dropped_attributes for s in sink.spans),
        "chat spans missing an identity attribute": sum(
            1 for s in chats if any(k not in (s.attributes or {}) for k in IDENTITY)),
        "most attributes on a chat span": max(len(s.attributes or {}) for s in chats),
        "content keys left out by the budget": sum(
            int((s.attributes or {}).get(sc.CONTENT_DROPPED_ATTRIBUTES, 0)) for s in chats),
        "SDK warnings logged": len(warnings),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="10,50,200", help="run lengths, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.steps.split(",")]
    print(f"LangGraph ReAct agent, capture off vs on, {args.rounds} alternating rounds; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'steps':>6}{'off ms/run':>12}{'on ms/run':>11}{'added us/step':>15}"
          f"{'content KB/run':>16}")
    per_step: dict[int, float] = {}
    for steps in lengths:
        graph = build_agent(steps)
        sinks = {capture: ContentSink() for capture in (False, True)}
        callbacks = {capture: handler(capture, sinks[capture]) for capture in (False, True)}
        runs = max(1, 200 // steps)
        for capture in (False, True):  # warm-up
            run_block(graph, steps, callbacks[capture], 1)
        times: dict[bool, list[float]] = {False: [], True: []}
        before = {capture: sinks[capture].content_chars for capture in (False, True)}
        for _ in range(args.rounds):
            for capture in (False, True):
                times[capture].append(run_block(graph, steps, callbacks[capture], runs))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        per_step[steps] = (on - off) / steps * 1e6
        content = (sinks[True].content_chars - before[True]) / (args.rounds * runs) / 1024
        print(f"{steps:>6}{off * 1e3:12.2f}{on * 1e3:11.2f}{per_step[steps]:15.0f}"
              f"{content:16.1f}")
    first, last = lengths[0], lengths[-1]
    if per_step[first] > 0:
        print(f"capture-on added us per step, {last} steps / {first} steps: "
              f"{per_step[last] / per_step[first]:.2f}x (target <= 1.5x)")
    print(f"one {last}-step run with capture on:")
    for label, value in long_run_report(last).items():
        print(f"  {label}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
