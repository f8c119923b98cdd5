"""Retrieval spans carry seed 004's retrieval model; text only with content capture."""

from __future__ import annotations

import json

import pytest
from llama_index.core.llms import MockLLM

from spanguard.hashing import KeyedHasher
from spanguard.testing import SpanCapture
from tests.plugins._llama_index_fixtures import DOCUMENTS, build_index, instrumented

QUESTION = "How long do refunds take?"
HASHER = KeyedHasher(b"k" * 32)


def _retrieval_of(cap: SpanCapture, **options: object) -> dict[str, object]:
    retriever = build_index().as_retriever(similarity_top_k=3)
    with instrumented(cap, hasher=HASHER, **options):
        retriever.retrieve(QUESTION)
    return cap.tree().attributes


def _all_values(cap: SpanCapture) -> str:
    return json.dumps([span.attributes for span in cap.spans()], default=str)


def test_retrieval_records_ids_scores_hashes_and_provenance(cap: SpanCapture) -> None:
    attrs = _retrieval_of(cap)
    assert attrs["spanguard.retrieval.query_hash"] == HASHER(QUESTION)
    assert attrs["spanguard.retrieval.candidate_count"] == 3
    assert sorted(attrs["spanguard.retrieval.document_ids"]) == ["refunds", "shipping", "support"]
    chunk_ids = attrs["spanguard.retrieval.chunk_ids"]
    assert len(chunk_ids) == 3 and len(set(chunk_ids)) == 3
    scores = attrs["spanguard.retrieval.scores"]
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert all(h.startswith("sha256:") for h in attrs["spanguard.retrieval.content_hashes"])
    # OpenInference's per-document form, as Phoenix shows it.
    for i in range(3):
        assert attrs[f"retrieval.documents.{i}.document.id"] == chunk_ids[i]
        assert attrs[f"retrieval.documents.{i}.document.score"] == scores[i]
    by_doc = {doc_id: json.loads(attrs[f"retrieval.documents.{i}.document.metadata"])
              for i, doc_id in enumerate(attrs["spanguard.retrieval.document_ids"])}
    assert by_doc["refunds"] == {"source": "handbook", "version": "v3",
                                 "file_name": "refunds.md"}
    assert by_doc["support"] == {"source": "wiki"}


def test_metadata_outside_provenance_is_not_recorded(cap: SpanCapture) -> None:
    _retrieval_of(cap)
    assert "alice@example.com" not in _all_values(cap)


def test_content_capture_is_off_by_default(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(cap):
        engine.query(QUESTION)
    everything = _all_values(cap)
    assert QUESTION not in everything
    for doc in DOCUMENTS:
        assert doc.text not in everything
    retrieval = cap.tree().find("retrieval").attributes
    assert not [k for k in retrieval if k.endswith(".document.content")]
    assert "gen_ai.retrieval.query.text" not in retrieval


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_content_capture_on_records_text(cap: SpanCapture, how: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    options: dict[str, object] = {}
    if how == "argument":
        options["capture_content"] = True
    else:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    attrs = _retrieval_of(cap, **options)
    assert attrs["gen_ai.retrieval.query.text"] == QUESTION
    contents = {attrs[f"retrieval.documents.{i}.document.content"] for i in range(3)}
    assert contents == {doc.text for doc in DOCUMENTS}


def test_explicit_false_beats_the_environment(cap: SpanCapture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    _retrieval_of(cap, capture_content=False)
    assert QUESTION not in _all_values(cap)


def test_content_capture_records_prompt_and_answer(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(cap, capture_content=True):
        response = engine.query(QUESTION)
    root = cap.tree()
    assert root.attributes["input.value"] == QUESTION
    assert root.attributes["output.value"] == str(response)
    chat = root.find("text_completion").attributes
    assert QUESTION in chat["input.value"]
    assert chat["output.value"] == str(response)


def test_query_hash_is_keyed_and_stable(cap: SpanCapture) -> None:
    """Same query, same key -> same hash; another key -> another hash (no dictionary attack)."""
    retriever = build_index().as_retriever()
    with instrumented(cap, hasher=HASHER):
        retriever.retrieve(QUESTION)
        retriever.retrieve(QUESTION)
    first, second = (root.attributes["spanguard.retrieval.query_hash"] for root in cap.trees())
    assert first == second == HASHER(QUESTION)
    assert first != KeyedHasher(b"z" * 32)(QUESTION)
