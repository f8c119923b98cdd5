"""``spanguard demo``: a span tree in the local store with nothing but the core.

It replays a small, fixed agent run (two model calls around one tool call)
through the same span bookkeeping the framework plugins use, then prints the
tree back from the local store, so a new user sees the whole path
(bookkeeping -> exporter -> store -> CLI) work on their machine.
"""

from __future__ import annotations

import argparse
import uuid

from spanguard import attributes as attrs
from spanguard.cli._common import EXIT_CONFIG, EXIT_OK
from spanguard.cli.shell import spanguard_command
from spanguard.config import configure
from spanguard.spantree import SpanTree
from spanguard.tree import build_forest, render


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    handle = configure(home=args.home, service_name="spanguard-demo")
    tree = SpanTree(handle.tracer_provider.get_tracer("spanguard.demo"))
    run_id = uuid.uuid4()
    identity = attrs.run_identity_attributes(
        conversation_id="demo-thread-1", hasher=handle.hasher,
        user_hash=handle.hasher("alice@example.com"),
        tenant_hash=handle.hasher("acme"), prompt_version="support-v3")
    root = tree.start(run_id, None, attrs.agent_span_name("support_agent"),
                      attrs.agent_attributes("support_agent"), run_attributes=identity)
    tree.start("agent-1", run_id, "agent", dict(attrs.KIND_CHAIN))
    for step, (input_tokens, output_tokens) in enumerate(((420, 35), (520, 60)), start=1):
        model = "gpt-4o-mini"
        call = tree.start(f"llm-{step}", "agent-1", attrs.chat_span_name(model),
                          attrs.model_attributes(model, "openai", temperature=0.0))
        cost = handle.prices.cost(model, input_tokens, output_tokens)
        call.span.set_attributes(attrs.usage_attributes(input_tokens, output_tokens))
        call.span.set_attributes(attrs.cost_attributes(cost))
        tree.add_usage(call, input_tokens, output_tokens, cost)
        tree.end(f"llm-{step}")
        if step == 1:
            tree.start("tool-1", "agent-1", attrs.tool_span_name("lookup_order"),
                       attrs.tool_attributes("lookup_order", "call_1"))
            tree.end("tool-1")
    tree.end("agent-1")
    tree.end(run_id)
    handle.force_flush()
    trace_id = format(root.span.get_span_context().trace_id, "032x")
    if handle.store is None:
        print("the local store is unavailable: " + "; ".join(handle.problems))
        return EXIT_CONFIG
    print(render(build_forest(handle.store.trace(trace_id))))
    handle.shutdown()
    command = spanguard_command(handle.home)
    print(f"\ntrace {trace_id} is in {handle.home}/traces.db")
    print(f"next: {command} traces list  |  {command} traces show {trace_id[:12]}")
    return EXIT_OK
