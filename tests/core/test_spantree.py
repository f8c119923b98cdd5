"""Span bookkeeping: parents under concurrency, the outer span, leaks, folding."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc
import uuid

from opentelemetry import trace

from spanguard import attributes as attrs
from spanguard import semconv as sc
from spanguard.hashing import KeyedHasher
from spanguard.spantree import SpanTree
from spanguard.testing import SpanCapture


def _tree(cap: SpanCapture, **kwargs: object) -> SpanTree:
    return SpanTree(cap.tracer_provider.get_tracer("test"), **kwargs)  # type: ignore[arg-type]


def _one_run(tree: SpanTree, tag: str) -> None:
    root = uuid.uuid4()
    tree.start(root, None, attrs.agent_span_name(tag), attrs.agent_attributes(tag))
    node, llm, tool = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    tree.start(node, root, f"node-{tag}", dict(attrs.KIND_CHAIN))
    tree.start(llm, node, attrs.chat_span_name(f"model-{tag}"), attrs.model_attributes("m"))
    tree.end(llm)
    tree.start(tool, node, attrs.tool_span_name(f"tool-{tag}"), attrs.tool_attributes("t"))
    tree.end(tool)
    tree.end(node)
    tree.end(root)


def _assert_runs_separate(cap: SpanCapture, count: int) -> None:
    roots = cap.trees()
    assert len(roots) == count
    for root in roots:
        tag = root.name.removeprefix("invoke_agent ")
        (node,) = root.children
        assert node.name == f"node-{tag}"
        assert [c.name for c in node.children] == [f"chat model-{tag}", f"execute_tool tool-{tag}"]
        trace_ids = {n.span.trace_id for n in root.walk()}
        assert len(trace_ids) == 1


def test_threads_never_cross_parents(cap: SpanCapture) -> None:
    tree = _tree(cap)
    barrier = threading.Barrier(50)

    def worker(index: int) -> None:
        barrier.wait()
        for repeat in range(6):
            _one_run(tree, f"t{index}-{repeat}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _assert_runs_separate(cap, 300)
    assert len(tree) == 0


async def test_asyncio_tasks_never_cross_parents(cap: SpanCapture) -> None:
    tree = _tree(cap)

    async def run(index: int) -> None:
        root = uuid.uuid4()
        tree.start(root, None, attrs.agent_span_name(f"a{index}"), attrs.agent_attributes("a"))
        node = uuid.uuid4()
        tree.start(node, root, f"node-a{index}", dict(attrs.KIND_CHAIN))
        await asyncio.sleep(0)
        llm = uuid.uuid4()
        tree.start(llm, node, attrs.chat_span_name(f"model-a{index}"), attrs.model_attributes("m"))
        await asyncio.sleep(0)
        tree.end(llm)
        tool = uuid.uuid4()
        tree.start(tool, node, attrs.tool_span_name(f"tool-a{index}"), attrs.tool_attributes("t"))
        await asyncio.sleep(0)
        tree.end(tool)
        tree.end(node)
        tree.end(root)

    await asyncio.gather(*(run(i) for i in range(400)))
    _assert_runs_separate(cap, 400)


def test_run_inside_an_outer_span_becomes_its_child(cap: SpanCapture) -> None:
    tracer = cap.tracer_provider.get_tracer("web")
    tree = _tree(cap)
    with tracer.start_as_current_span("POST /chat") as outer:
        _one_run(tree, "inner")
    root = cap.tree()
    assert root.name == "POST /chat"
    (agent,) = root.children
    assert agent.name == "invoke_agent inner"
    assert agent.span.parent_span_id == format(outer.get_span_context().span_id, "016x")


def test_root_end_closes_what_the_run_left_open(cap: SpanCapture) -> None:
    tree = _tree(cap)
    tree.start("root", None, "invoke_agent x", attrs.agent_attributes("x"))
    tree.start("node", "root", "node", dict(attrs.KIND_CHAIN))
    tree.start("tool", "node", "execute_tool t", attrs.tool_attributes("t"))
    tree.end("root")
    assert len(tree) == 0
    by_name = {s.name: s for s in cap.spans()}
    assert set(by_name) == {"invoke_agent x", "node", "execute_tool t"}
    assert by_name["execute_tool t"].attributes[sc.ABANDONED]
    assert sc.ABANDONED not in by_name["invoke_agent x"].attributes


def test_folded_runs_attach_children_to_the_parent(cap: SpanCapture) -> None:
    tree = _tree(cap)
    tree.start("root", None, "invoke_agent x", attrs.agent_attributes("x"))
    assert tree.fold("seq", "root") is not None
    tree.start("llm", "seq", "chat m", attrs.model_attributes("m"))
    tree.end("llm")
    assert tree.end("seq") is None  # an alias has no span of its own
    tree.end("root")
    root = cap.tree()
    assert [c.name for c in root.children] == ["chat m"]


def test_run_attributes_are_copied_onto_every_span(cap: SpanCapture) -> None:
    tree = _tree(cap)
    hasher = KeyedHasher(b"k" * 32)
    identity = attrs.run_identity_attributes(conversation_id="thread-9", prompt_version="p7",
                                             hasher=hasher)
    tree.start("root", None, "invoke_agent x", attrs.agent_attributes("x"),
               run_attributes=identity)
    tree.start("node", "root", "node", dict(attrs.KIND_CHAIN))
    tree.start("llm", "node", "chat m", attrs.model_attributes("m"))
    for key in ("llm", "node", "root"):
        tree.end(key)
    for span in cap.spans():
        assert span.attributes[sc.GEN_AI_CONVERSATION_ID] == hasher("thread-9")
        assert span.attributes[sc.PROMPT_VERSION] == "p7"


def test_usage_rolls_up_to_the_root(cap: SpanCapture) -> None:
    tree = _tree(cap)
    tree.start("root", None, "invoke_agent x", attrs.agent_attributes("x"))
    for index, (tokens_in, tokens_out, cost) in enumerate(((100, 10, 0.5), (200, 20, 0.25))):
        entry = tree.start(index, "root", "chat m", attrs.model_attributes("m"))
        tree.add_usage(entry, tokens_in, tokens_out, cost)
        tree.end(index)
    tree.end("root")
    root = cap.tree().attributes
    assert root[sc.RUN_TOTAL_INPUT_TOKENS] == 300
    assert root[sc.RUN_TOTAL_OUTPUT_TOKENS] == 30
    assert root[sc.RUN_TOTAL_COST_USD] == 0.75
    # An invoke_agent root is the agent's aggregate in the GenAI vocabulary too...
    assert (root[sc.GEN_AI_USAGE_INPUT_TOKENS], root[sc.GEN_AI_USAGE_OUTPUT_TOKENS]) == (300, 30)
    # ...but never in the vocabularies backends sum per trace (they would count it twice).
    assert not [k for k in root if k.startswith("llm.token_count") or k.startswith("llm.cost")]
    assert sc.COST_USD not in root and "gen_ai.usage.cost" not in root


def test_a_chain_root_carries_run_totals_only_under_spanguard_run(cap: SpanCapture) -> None:
    """A LlamaIndex query engine's root is a CHAIN: gen_ai.usage.* there would be read as a
    model call's usage (Langfuse sums every observation's but an invoke_agent's)."""
    tree = _tree(cap)
    tree.start("root", None, "RetrieverQueryEngine", dict(attrs.KIND_CHAIN))
    entry = tree.start("llm", "root", "chat m", attrs.model_attributes("m"))
    tree.add_usage(entry, 120, 7, 0.01)
    tree.end("llm")
    tree.end("root")
    root = cap.tree().attributes
    assert root[sc.RUN_TOTAL_INPUT_TOKENS] == 120 and root[sc.RUN_TOTAL_COST_USD] == 0.01
    assert not [k for k in root if k.startswith(("gen_ai.usage", "llm.token_count",
                                                 "llm.cost", "spanguard.cost"))]


def test_unknown_cost_on_any_call_makes_the_run_cost_unknown(cap: SpanCapture) -> None:
    tree = _tree(cap)
    tree.start("root", None, "invoke_agent x", attrs.agent_attributes("x"))
    for index, cost in enumerate((0.5, None)):
        entry = tree.start(index, "root", "chat m", attrs.model_attributes("m"))
        tree.add_usage(entry, 1, 1, cost)
        tree.end(index)
    tree.end("root")
    root = cap.tree().attributes
    assert root[sc.RUN_COST_UNKNOWN] is True
    assert sc.RUN_TOTAL_COST_USD not in root and sc.COST_UNKNOWN not in root


def test_errors_set_status_and_error_type(cap: SpanCapture) -> None:
    tree = _tree(cap)
    tree.start("root", None, "invoke_agent x", attrs.agent_attributes("x"))
    tree.start("tool", "root", "execute_tool t", attrs.tool_attributes("t"))
    tree.end("tool", error=ValueError("bad input"))
    tree.end("root")
    tool = cap.tree().find("execute_tool t")
    assert tool.span.status == "ERROR"
    assert tool.attributes[sc.ERROR_TYPE] == "ValueError"


def test_memory_stays_flat_over_20000_runs_with_abandoned_entries(cap: SpanCapture) -> None:
    tracer = trace.NoOpTracerProvider().get_tracer("flat")
    tree = SpanTree(tracer, max_open=500, max_age_seconds=3600)

    def batch(start: int) -> None:
        for index in range(start, start + 10_000):
            tree.start(("root", index), None, "invoke_agent x", {})
            tree.start(("node", index), ("root", index), "node", {})
            # Every tenth run is abandoned: its end never arrives.
            if index % 10:
                tree.end(("node", index))
                tree.end(("root", index))

    batch(0)
    gc.collect()
    tracemalloc.start()
    first, _ = tracemalloc.get_traced_memory()
    batch(10_000)
    gc.collect()
    second, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(tree) <= 500 + 1024 * 2
    assert tree.reaped > 0
    # The second 10,000 runs must not retain memory beyond what the first did.
    assert second - first < 512 * 1024, f"grew by {second - first} bytes"


def test_entries_older_than_max_age_are_reaped(cap: SpanCapture) -> None:
    tree = _tree(cap, max_age_seconds=0.000001)
    tree.start("stale", None, "invoke_agent stale", attrs.agent_attributes("stale"))
    for index in range(1100):
        tree.start(index, None, "invoke_agent fresh", {})
        tree.end(index)
    assert tree.get("stale") is None
    stale = next(s for s in cap.spans() if s.name == "invoke_agent stale")
    assert "reaped" in stale.attributes[sc.ABANDONED]


def test_abandon_all_ends_every_open_span_once(cap: SpanCapture) -> None:
    tree = SpanTree(cap.tracer_provider.get_tracer("t"))
    tree.start("root", None, "root", {})
    tree.start("child", "root", "child", {})
    tree.fold("plumbing", "child")
    assert tree.abandon_all("adapter removed") == 2  # the alias has no span of its own
    assert len(tree) == 0
    spans = {s.name: s for s in cap.spans()}
    assert set(spans) == {"root", "child"}
    assert all(s.attributes[sc.ABANDONED] == "adapter removed" for s in spans.values())
    assert tree.end("root") is None  # a late end is harmless
