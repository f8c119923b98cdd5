"""Provider names as the GenAI conventions and OpenInference spell them.

Frameworks name a provider their own way: LangChain's ``ls_provider`` (``azure``,
``amazon_bedrock``, ``google_vertexai``, or a class name for integrations that set
none), LlamaIndex by integration package (``llama_index.llms.azure_openai``).
Backends group, price and filter by the well-known values of the pinned GenAI
conventions (``gen_ai.provider.name``: ``openai``, ``azure.ai.openai``,
``aws.bedrock``, ``gcp.vertex_ai``, ...) and by OpenInference's pair ``llm.provider``
(who hosts the model: ``azure``) and ``llm.system`` (whose model family it is:
``openai``). One table from framework names to the three; a name the table does not
know is kept, lower-cased, as a custom value (the conventions allow one), so every
model span says something.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from spanguard import semconv as sc

__all__ = ["Provider", "resolve_provider"]

_P = sc.ProviderName


class Provider(NamedTuple):
    """One provider in the three vocabularies."""

    genai: str  # gen_ai.provider.name
    openinference: str  # llm.provider
    system: str  # llm.system


_OPENAI = Provider(_P.OPENAI.value, "openai", "openai")
_AZURE_OPENAI = Provider(_P.AZURE_AI_OPENAI.value, "azure", "openai")
_AZURE_INFERENCE = Provider(_P.AZURE_AI_INFERENCE.value, "azure", "azure")
_ANTHROPIC = Provider(_P.ANTHROPIC.value, "anthropic", "anthropic")
_BEDROCK = Provider(_P.AWS_BEDROCK.value, "aws", "aws")
_VERTEX = Provider(_P.GCP_VERTEX_AI.value, "google", "vertexai")
_GEMINI = Provider(_P.GCP_GEMINI.value, "google", "vertexai")
_GOOGLE = Provider(_P.GCP_GEN_AI.value, "google", "vertexai")
_MISTRAL = Provider(_P.MISTRAL_AI.value, "mistralai", "mistralai")
_COHERE = Provider(_P.COHERE.value, "cohere", "cohere")
_GROQ = Provider(_P.GROQ.value, "groq", "groq")
_DEEPSEEK = Provider(_P.DEEPSEEK.value, "deepseek", "deepseek")
_XAI = Provider(_P.X_AI.value, "xai", "xai")
_PERPLEXITY = Provider(_P.PERPLEXITY.value, "perplexity", "perplexity")
_WATSONX = Provider(_P.IBM_WATSONX_AI.value, "ibm", "ibm")

# Framework spellings (lower case, '-' as '_'): LangChain's ls_provider values and
# LlamaIndex's integration package names (llama_index.llms.<name>, .embeddings.<name>).
_KNOWN: dict[str, Provider] = {
    "openai": _OPENAI,
    "azure": _AZURE_OPENAI,  # LangChain's AzureChatOpenAI
    "azure_openai": _AZURE_OPENAI,
    "azure_ai_openai": _AZURE_OPENAI,
    "azure_ai": _AZURE_INFERENCE,  # langchain-azure-ai
    "azure_inference": _AZURE_INFERENCE,
    "azure_ai_inference": _AZURE_INFERENCE,
    "anthropic": _ANTHROPIC,
    "amazon_bedrock": _BEDROCK,  # ChatBedrock, ChatBedrockConverse
    "bedrock": _BEDROCK,
    "bedrock_converse": _BEDROCK,
    "aws_bedrock": _BEDROCK,
    "google_vertexai": _VERTEX,  # ChatVertexAI
    "vertexai": _VERTEX,
    "vertex": _VERTEX,
    "vertex_ai": _VERTEX,
    "google_anthropic_vertex": Provider(_P.GCP_VERTEX_AI.value, "google", "anthropic"),
    "gemini": _GEMINI,  # llama_index.llms.gemini: the AI Studio endpoint
    "google_genai": _GOOGLE,  # either endpoint: the conventions' value for "unknown"
    "google": _GOOGLE,
    "mistral": _MISTRAL,
    "mistralai": _MISTRAL,
    "mistral_ai": _MISTRAL,
    "cohere": _COHERE,
    "groq": _GROQ,
    "deepseek": _DEEPSEEK,
    "xai": _XAI,
    "x_ai": _XAI,
    "perplexity": _PERPLEXITY,
    "ibm": _WATSONX,
    "watsonx": _WATSONX,
    "ibm_watsonx": _WATSONX,
}
# Bedrock hosts several families; its model ids start with the family.
_BEDROCK_FAMILIES = (("anthropic.", "anthropic"), ("cohere.", "cohere"),
                     ("mistral.", "mistralai"), ("amazon.", "aws"), ("meta.", "meta"))


@lru_cache(maxsize=256)
def resolve_provider(name: str, model: str | None = None) -> Provider:
    """The provider a framework calls ``name``; ``model`` refines Bedrock's family.

    Unknown names are kept as custom values (lower case, ``-`` as ``_``).
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    known = _KNOWN.get(key)
    if known is None:
        return Provider(key, key, key)
    if known is _BEDROCK and model:
        bare = model.lower()
        for region in ("us.", "eu.", "apac.", "global."):
            if bare.startswith(region):
                bare = bare[len(region):]
                break
        for prefix, family in _BEDROCK_FAMILIES:
            if bare.startswith(prefix):
                return Provider(known.genai, known.openinference, family)
    return known
