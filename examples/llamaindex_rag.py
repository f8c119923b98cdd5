"""LlamaIndex RAG traced by spanguard: a query engine over a small index, offline.

    python examples/llamaindex_rag.py

Real llama-index-core with its mock embedding and mock LLM (no network, no key).
The tree shows the query engine (CHAIN), the retrieval (RETRIEVER) with query
hash, candidate count, document ids, scores and source metadata, and the LLM
call; document text is recorded only with content capture on
(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true).
"""

from __future__ import annotations

from llama_index.core import Document, MockEmbedding, Settings, VectorStoreIndex
from llama_index.core.llms import MockLLM

import spanguard
from spanguard.plugins import llama_index as sg_llama


def main() -> None:
    handle = spanguard.configure(console=True)
    sg_llama.instrument(tracer_provider=handle.tracer_provider)
    Settings.llm = MockLLM(max_tokens=32)
    Settings.embed_model = MockEmbedding(embed_dim=8)
    docs = [
        Document(text="Refunds for annual plans are available within 30 days.",
                 id_="refunds", metadata={"source": "handbook/refunds.md", "version": "v3"}),
        Document(text="Orders ship within two business days.",
                 id_="shipping", metadata={"source": "handbook/shipping.md", "version": "v1"}),
    ]
    index = VectorStoreIndex.from_documents(docs)
    index.set_index_id("handbook")
    answer = index.as_query_engine(similarity_top_k=2).query("How long do refunds take?")
    print(f"answer: {str(answer)[:60]}...")
    sg_llama.uninstrument()
    handle.shutdown()


if __name__ == "__main__":
    main()
