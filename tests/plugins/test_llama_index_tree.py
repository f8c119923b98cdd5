"""The span tree of LlamaIndex queries: names, kinds, parents, async, concurrency."""

from __future__ import annotations

import asyncio
import threading

from llama_index.core.llms import MockLLM
from opentelemetry import trace

from spanguard.testing import SpanCapture
from tests.plugins._llama_index_fixtures import build_index, instrumented

QUERY_TREE = ("RetrieverQueryEngine", [
    ("retrieval VectorIndexRetriever", [("embeddings", [])]),
    ("CompactAndRefine", [("text_completion", [])]),
])


def test_query_is_one_tree_of_the_four_steps(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(cap):
        engine.query("How long do refunds take?")
    root = cap.tree()
    # Plumbing spans (_query, _retrieve, text splitters, the refine program,
    # predict -> complete) are folded: only steps a person would name remain.
    assert root.shape() == QUERY_TREE
    assert root.kind == "CHAIN"
    assert root.find("retrieval").kind == "RETRIEVER"
    assert root.find("embeddings").kind == "EMBEDDING"
    assert root.find("CompactAndRefine").kind == "CHAIN"
    chat = root.find("text_completion")
    assert chat.kind == "LLM"
    assert chat.attributes["gen_ai.operation.name"] == "text_completion"
    trace_ids = {node.span.trace_id for node in root.walk()}
    assert trace_ids == {root.span.trace_id}


def test_named_index_names_the_retrieval_span(cap: SpanCapture) -> None:
    engine = build_index(index_id="handbook").as_query_engine(llm=MockLLM())
    with instrumented(cap):
        engine.query("refunds?")
    retrieval = cap.tree().find("retrieval")
    assert retrieval.name == "retrieval handbook"
    assert retrieval.attributes["gen_ai.data_source.id"] == "handbook"


def test_query_inside_an_active_span_is_its_child(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    tracer = cap.tracer_provider.get_tracer("app")
    with instrumented(cap), tracer.start_as_current_span("execute_tool lookup"):
        engine.query("refunds?")
    root = cap.tree()
    assert root.name == "execute_tool lookup"
    assert [child.name for child in root.children] == ["RetrieverQueryEngine"]
    assert root.children[0].shape() == QUERY_TREE


def test_no_active_span_after_a_query(cap: SpanCapture) -> None:
    """The handlers never leave a span attached to the caller's context."""
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(cap):
        engine.query("refunds?")
        assert not trace.get_current_span().get_span_context().is_valid


async def test_aquery_builds_the_same_tree(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(cap):
        await engine.aquery("How long do refunds take?")
    assert cap.tree().shape() == QUERY_TREE


async def test_concurrent_aqueries_make_separate_trees(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    tracer = cap.tracer_provider.get_tracer("app")

    async def ask(n: int) -> None:
        with tracer.start_as_current_span(f"request {n}"):
            await asyncio.sleep(0)
            await engine.aquery(f"question {n}")

    with instrumented(cap):
        await asyncio.gather(*(ask(n) for n in range(5)))
    roots = cap.trees()
    assert sorted(root.name for root in roots) == [f"request {n}" for n in range(5)]
    for root in roots:
        assert [child.shape() for child in root.children] == [QUERY_TREE]
        assert len({node.span.trace_id for node in root.walk()}) == 1


def test_queries_in_threads_do_not_cross(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            for _ in range(3):
                engine.query(f"question {n}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    with instrumented(cap):
        threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    roots = cap.trees()
    assert len(roots) == 12
    assert all(root.shape() == QUERY_TREE for root in roots)


def test_retriever_called_directly_is_a_retriever_root(cap: SpanCapture) -> None:
    retriever = build_index().as_retriever(similarity_top_k=2)
    with instrumented(cap):
        nodes = retriever.retrieve("shipping")
    root = cap.tree()
    assert root.shape() == ("retrieval VectorIndexRetriever", [("embeddings", [])])
    assert root.attributes["spanguard.retrieval.candidate_count"] == len(nodes) == 2


def test_failed_step_is_marked_as_error(cap: SpanCapture) -> None:
    class BrokenLLM(MockLLM):
        def complete(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            raise TimeoutError("provider timed out")

    engine = build_index().as_query_engine(llm=BrokenLLM())
    with instrumented(cap):
        try:
            engine.query("refunds?")
        except TimeoutError:
            pass
        else:
            raise AssertionError("the LLM error must reach the caller")
    root = cap.tree()
    chat = root.find("text_completion")
    assert chat.attributes["error.type"] == "TimeoutError"
    assert root.attributes["error.type"] == "TimeoutError"
