"""Seed 004's taxonomy guards in LlamaIndex: tenant scope, citations, structured output.

A real ``VectorStoreIndex`` (offline ``MockEmbedding``) over documents of two
tenants, a query engine with a scripted ``CustomLLM``, and the real
``instrument()``: the other tenant's chunks are removed from what ``retrieve()``
returns, an answer citing an unretrieved source is refused, and structured
output is repaired within the policy's bound.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel, Field

from spanguard import run_context
from spanguard import semconv as sc
from spanguard.guardrails import Policy
from spanguard.guardrails.citations import Citations, InvalidCitation
from spanguard.guardrails.structured import StructuredOutput, StructuredOutputError
from spanguard.guardrails.tenant_scope import TenantScope
from spanguard.plugins.llama_index_structured import structured_predict
from spanguard.testing import SpanCapture
from tests.plugins._llama_index_fixtures import instrumented

DOCS = [Document(text="Acme refunds take 14 days.", id_="acme-refunds",
                 metadata={"tenant_id": "acme"}),
        Document(text="Globex refunds take 90 days.", id_="globex-refunds",
                 metadata={"tenant_id": "globex"}),
        Document(text="Acme ships free above 50 EUR.", id_="acme-shipping",
                 metadata={"tenant_id": "acme"})]


class Scripted(CustomLLM):
    """Answers from a script, in order; remembers every prompt."""

    script: list[str]
    prompts: list[str] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False,
                 **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        return CompletionResponse(text=self.script[min(len(self.prompts),
                                                       len(self.script)) - 1])

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> Any:
        raise NotImplementedError


def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))


def test_another_tenants_chunks_are_removed_from_what_retrieve_returns(
        cap: SpanCapture) -> None:
    retriever = index().as_retriever(similarity_top_k=3)
    with instrumented(cap, policy=Policy(tenant_scope=TenantScope())), \
            run_context(tenant_id="acme"):
        nodes = retriever.retrieve("refunds")
    assert sorted(n.node.ref_doc_id for n in nodes) == ["acme-refunds", "acme-shipping"]
    blocked = next(s for s in cap.spans() if s.name == "guardrail tenant_scope")
    assert blocked.attributes[sc.ERROR_TYPE] == "tenant_scope_violation"
    assert blocked.attributes[sc.RETRIEVAL_AUTHORIZED_COUNT] == 2
    retrieval = next(s for s in cap.spans() if s.name.startswith("retrieval"))
    assert sorted(retrieval.attributes[sc.RETRIEVAL_DOCUMENT_IDS]) == [
        "acme-refunds", "acme-shipping"]


def test_a_query_never_shows_the_model_another_tenants_text(cap: SpanCapture) -> None:
    llm = Scripted(script=["14 days [source: acme-refunds]"], prompts=[])
    engine = index().as_query_engine(llm=llm, similarity_top_k=3)
    policy = Policy(tenant_scope=TenantScope(), citations=Citations(action="refuse"))
    with instrumented(cap, policy=policy), run_context(tenant_id="acme"):
        answer = engine.query("How long do refunds take?")
    assert "14 days" in str(answer)
    assert "Globex" not in "".join(llm.prompts) and "Acme refunds" in "".join(llm.prompts)


def test_an_answer_citing_a_withheld_source_is_refused(cap: SpanCapture) -> None:
    llm = Scripted(script=["90 days [source: globex-refunds]"], prompts=[])
    engine = index().as_query_engine(llm=llm, similarity_top_k=3)
    policy = Policy(tenant_scope=TenantScope(), citations=Citations(action="refuse"))
    with instrumented(cap, policy=policy), run_context(tenant_id="acme"), \
            pytest.raises(InvalidCitation) as refused:
        engine.query("How long do refunds take?")
    assert refused.value.invalid == ("globex-refunds",)
    assert any(s.attributes.get(sc.ERROR_TYPE) == "invalid_citation" for s in cap.spans())


class Refund(BaseModel):
    days: int
    tenant: str


PROMPT = PromptTemplate("How long do refunds take at {company}? Answer as JSON.")


def test_structured_output_is_repaired_then_returned(cap: SpanCapture) -> None:
    llm = Scripted(script=["about two weeks", '{"days": "fourteen", "tenant": "acme"}',
                           '{"days": 14, "tenant": "acme"}'], prompts=[])
    policy = Policy(structured_output=StructuredOutput("repair", max_repairs=2))
    with instrumented(cap):
        refund = structured_predict(llm, Refund, PROMPT, policy=policy,
                                    tracer_provider=cap.tracer_provider, company="Acme")
    assert refund == Refund(days=14, tenant="acme")
    assert len(llm.prompts) == 3
    assert "$.days: int_parsing" in llm.prompts[2] and "fourteen" not in llm.prompts[2]
    failed = [s for s in cap.spans() if s.name == "guardrail structured_output"]
    assert [(s.attributes[sc.REPAIR_ATTEMPT], s.attributes[sc.ERROR_TYPE]) for s in failed] == [
        (1, "syntax_decode_error"), (2, "schema_validation_error")]


def test_structured_output_is_refused_at_the_first_failure_by_default(
        cap: SpanCapture) -> None:
    llm = Scripted(script=['{"days": 14}'], prompts=[])
    with pytest.raises(StructuredOutputError) as refused:
        structured_predict(llm, Refund, PROMPT, tracer_provider=cap.tracer_provider,
                           company="Acme")
    assert refused.value.error_type == "schema_validation_error"
    assert "$.tenant: missing" in str(refused.value)
    assert len(llm.prompts) == 1
