"""Which span attributes hold user or model text, and so pass through the redactor.

One place, built from the semconv constants, so an attribute added to an
adapter is either content (listed here) or metadata (never scanned).
"""

from __future__ import annotations

from spanguard import semconv as sc

__all__ = ["CONTENT_ATTRIBUTES", "CONTENT_PREFIXES", "is_content_key"]

# Exact keys whose values are user or model text.
CONTENT_ATTRIBUTES: frozenset[str] = frozenset({
    sc.GEN_AI_INPUT_MESSAGES,
    sc.GEN_AI_OUTPUT_MESSAGES,
    sc.GEN_AI_SYSTEM_INSTRUCTIONS,
    sc.GEN_AI_PROMPT,
    sc.GEN_AI_COMPLETION,
    sc.GEN_AI_TOOL_CALL_ARGUMENTS,
    sc.GEN_AI_TOOL_CALL_RESULT,
    sc.GEN_AI_RETRIEVAL_QUERY_TEXT,
    sc.OI_INPUT_VALUE,
    sc.OI_OUTPUT_VALUE,
    sc.OI_LLM_PROMPTS,
    sc.OI_LLM_PROMPT_TEMPLATE_VARIABLES,
    sc.EXCEPTION_MESSAGE,
    sc.EXCEPTION_STACKTRACE,
})
# Flattened OpenInference lists: ``llm.input_messages.0.message.content``,
# ``retrieval.documents.3.document.content``, ``embedding.embeddings.0.embedding.text``.
CONTENT_PREFIXES: tuple[str, ...] = (
    sc.OI_LLM_INPUT_MESSAGES + ".",
    sc.OI_LLM_OUTPUT_MESSAGES + ".",
    sc.OI_RETRIEVAL_DOCUMENTS + ".",
    sc.OI_EMBEDDING_EMBEDDINGS + ".",
    sc.OI_LLM_PROMPTS + ".",
)


def is_content_key(key: str) -> bool:
    return key in CONTENT_ATTRIBUTES or key.startswith(CONTENT_PREFIXES)
