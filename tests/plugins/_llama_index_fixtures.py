"""Real LlamaIndex parts for the plugin tests: an index over a few documents, offline.

``MockEmbedding`` and ``MockLLM`` come with llama-index-core. ``MockLLM`` reports
no token usage, so :class:`MeteredLLM` (a ``CustomLLM``, the documented way to
write an LLM integration, with the same callback decorators as MockLLM) answers
deterministically *and* reports usage the way the OpenAI integration does, in
``raw["usage"]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from spanguard.plugins import llama_index as sg_llama
from spanguard.testing import SpanCapture

DOCUMENTS = [
    Document(text="Refunds are processed within 14 days.", id_="refunds",
             metadata={"source": "handbook", "version": "v3", "file_name": "refunds.md",
                       "owner_email": "alice@example.com"}),
    Document(text="Shipping is free above 50 EUR.", id_="shipping",
             metadata={"source": "handbook", "version": "v2", "file_name": "shipping.md"}),
    Document(text="Support answers within one business day.", id_="support",
             metadata={"source": "wiki"}),
]


class MeteredLLM(CustomLLM):
    """Echoes a fixed answer and reports usage proportional to the prompt length."""

    model: str = "gpt-4o-mini"
    answer: str = "Refunds take 14 days."
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False,
                 **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 5}
        return CompletionResponse(text=self.answer, raw={"model": self.model, "usage": usage})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            yield self.complete(prompt)
        return gen()


def build_index(index_id: str | None = None) -> VectorStoreIndex:
    index = VectorStoreIndex.from_documents(DOCUMENTS, embed_model=MockEmbedding(embed_dim=8))
    if index_id is not None:
        index.set_index_id(index_id)
    return index


@contextmanager
def instrumented(cap: SpanCapture, **options: Any) -> Iterator[SpanCapture]:
    """Instrument into ``cap`` for the block, and always uninstrument after."""
    sg_llama.instrument(cap.tracer_provider, **options)
    try:
        yield cap
    finally:
        sg_llama.uninstrument()
