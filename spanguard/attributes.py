"""Attribute builders that write both vocabularies (OTel GenAI and OpenInference).

Adapters call these instead of setting names themselves, so every span that
spanguard emits opens correctly in Phoenix (OpenInference) and in any GenAI-aware
backend (Langfuse, Grafana, Datadog) with the same code path. The kind
dictionaries are built once at import; the hot path only copies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from spanguard import semconv as sc
from spanguard.hashing import KeyedHasher
from spanguard.providers import resolve_provider

AttributeValue = str | bool | int | float | list[str] | list[int] | list[float] | tuple[Any, ...]
Attributes = dict[str, Any]


def _kind(operation: str | None, kind: sc.SpanKind) -> Mapping[str, str]:
    attrs = {sc.OPENINFERENCE_SPAN_KIND: kind.value}
    if operation is not None:
        attrs[sc.GEN_AI_OPERATION_NAME] = operation
    return MappingProxyType(attrs)


KIND_AGENT = _kind(sc.OperationName.INVOKE_AGENT.value, sc.SpanKind.AGENT)
KIND_CHAIN = _kind(None, sc.SpanKind.CHAIN)
KIND_LLM = _kind(sc.OperationName.CHAT.value, sc.SpanKind.LLM)
KIND_TOOL = _kind(sc.OperationName.EXECUTE_TOOL.value, sc.SpanKind.TOOL)
KIND_RETRIEVER = _kind(sc.OperationName.RETRIEVAL.value, sc.SpanKind.RETRIEVER)
KIND_EMBEDDING = _kind(sc.OperationName.EMBEDDINGS.value, sc.SpanKind.EMBEDDING)
KIND_GUARDRAIL = _kind(None, sc.SpanKind.GUARDRAIL)


def agent_span_name(agent: str) -> str:
    return f"invoke_agent {agent}"


def chat_span_name(model: str | None) -> str:
    return f"chat {model}" if model else "chat"


_TEXT_COMPLETION = sc.OperationName.TEXT_COMPLETION.value


def completion_span_name(model: str | None) -> str:
    """A call to a completion (prompt in, text out) API: ``text_completion {model}``."""
    return f"{_TEXT_COMPLETION} {model}" if model else _TEXT_COMPLETION


def as_completion(attrs: Attributes) -> Attributes:
    """Model attributes (``chat``) turned into a text completion's; returns ``attrs``."""
    attrs[sc.GEN_AI_OPERATION_NAME] = _TEXT_COMPLETION
    return attrs


def tool_span_name(tool: str) -> str:
    return f"execute_tool {tool}"


def retrieval_span_name(source: str) -> str:
    return f"retrieval {source}"


def embeddings_span_name(model: str | None) -> str:
    return f"embeddings {model}" if model else "embeddings"


def guardrail_span_name(policy: str) -> str:
    return f"guardrail {policy}"


def agent_attributes(agent: str) -> Attributes:
    attrs: Attributes = dict(KIND_AGENT)
    attrs[sc.GEN_AI_AGENT_NAME] = agent
    attrs[sc.OI_AGENT_NAME] = agent
    return attrs


def model_attributes(
    request_model: str | None,
    provider: str | None = None,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    stream: bool | None = None,
) -> Attributes:
    """Request-side attributes of a model call (known before the provider answers).

    ``provider`` is the framework's own name for it (LangChain's ``ls_provider``, a
    LlamaIndex integration package); it is written as the conventions' well-known
    value (:func:`~spanguard.providers.resolve_provider`).
    """
    attrs: Attributes = dict(KIND_LLM)
    if request_model:
        attrs[sc.GEN_AI_REQUEST_MODEL] = request_model
        attrs[sc.OI_LLM_MODEL_NAME] = request_model
    if provider:
        provider_attributes(provider, request_model, attrs)
    if temperature is not None:
        attrs[sc.GEN_AI_REQUEST_TEMPERATURE] = float(temperature)
    if top_p is not None:
        attrs[sc.GEN_AI_REQUEST_TOP_P] = float(top_p)
    if max_tokens is not None:
        attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = int(max_tokens)
    if stream is not None:
        attrs[sc.GEN_AI_REQUEST_STREAM] = bool(stream)
    return attrs


def provider_attributes(provider: str, model: str | None, attrs: Attributes) -> None:
    """``gen_ai.provider.name``, ``llm.provider`` and ``llm.system`` for a framework's name."""
    known = resolve_provider(provider, model)
    attrs[sc.GEN_AI_PROVIDER_NAME] = known.genai
    attrs[sc.OI_LLM_PROVIDER] = known.openinference
    attrs[sc.OI_LLM_SYSTEM] = known.system


def usage_attributes(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read: int = 0,
    cache_creation: int = 0,
    reasoning: int = 0,
    into: Attributes | None = None,
) -> Attributes:
    """Token usage in both vocabularies; zero detail counts are left out.

    ``into``: add them to this dict and return it (a span's one attribute dict,
    built once on the hot path) instead of a new one.
    """
    attrs: Attributes = {} if into is None else into
    attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
    attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
    attrs[sc.OI_LLM_TOKEN_COUNT_PROMPT] = input_tokens
    attrs[sc.OI_LLM_TOKEN_COUNT_COMPLETION] = output_tokens
    attrs[sc.OI_LLM_TOKEN_COUNT_TOTAL] = input_tokens + output_tokens
    if cache_read:
        attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cache_read
        attrs[sc.OI_LLM_TOKEN_COUNT_CACHE_READ] = cache_read
    if cache_creation:
        attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = cache_creation
        attrs[sc.OI_LLM_TOKEN_COUNT_CACHE_WRITE] = cache_creation
    if reasoning:
        attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = reasoning
        attrs[sc.OI_LLM_TOKEN_COUNT_REASONING] = reasoning
    return attrs


_DEPRECATED_COST = sc.DEPRECATED_NAMES[sc.COST_USD]


def cost_attributes(cost_usd: float | None, *, into: Attributes | None = None) -> Attributes:
    """A model call's cost in USD, or an explicit unknown marker (never a silent zero);
    ``into`` as in :func:`usage_attributes`. For model spans only: a run's total is
    :data:`~spanguard.semconv.RUN_TOTAL_COST_USD` on its root."""
    attrs: Attributes = {} if into is None else into
    if cost_usd is None:
        attrs[sc.COST_UNKNOWN] = True
    else:
        attrs[sc.COST_USD] = cost_usd
        attrs[sc.OI_LLM_COST_TOTAL] = cost_usd
        attrs[_DEPRECATED_COST] = cost_usd  # 0.x name, one more release
    return attrs


def tool_attributes(tool: str, call_id: str | None = None,
                    arguments_hash: str | None = None) -> Attributes:
    attrs: Attributes = dict(KIND_TOOL)
    attrs[sc.GEN_AI_TOOL_NAME] = tool
    attrs[sc.OI_TOOL_NAME] = tool
    if call_id:
        attrs[sc.GEN_AI_TOOL_CALL_ID] = call_id
        attrs[sc.OI_TOOL_CALL_ID] = call_id
    if arguments_hash:
        attrs[sc.TOOL_ARGS_HASH] = arguments_hash
    return attrs


def retrieval_attributes(source: str | None) -> Attributes:
    attrs: Attributes = dict(KIND_RETRIEVER)
    if source:
        attrs[sc.GEN_AI_DATA_SOURCE_ID] = source
    return attrs


def embedding_attributes(model: str | None, provider: str | None = None) -> Attributes:
    attrs: Attributes = dict(KIND_EMBEDDING)
    if model:
        attrs[sc.GEN_AI_REQUEST_MODEL] = model
        attrs[sc.OI_EMBEDDING_MODEL_NAME] = model
    if provider:
        provider_attributes(provider, model, attrs)
    return attrs


def guardrail_attributes(
    name: str,
    decision: str,
    reason: str | None = None,
    *,
    limit: float | None = None,
    spend: float | None = None,
    prediction: float | None = None,
) -> Attributes:
    attrs: Attributes = dict(KIND_GUARDRAIL)
    attrs[sc.GUARDRAIL_NAME] = name
    attrs[sc.GUARDRAIL_DECISION] = decision
    if reason:
        attrs[sc.GUARDRAIL_REASON] = reason
    if limit is not None:
        attrs[sc.GUARDRAIL_LIMIT] = limit
    if spend is not None:
        attrs[sc.GUARDRAIL_SPEND] = spend
    if prediction is not None:
        attrs[sc.GUARDRAIL_PREDICTION] = prediction
    return attrs


def run_identity_attributes(
    *,
    conversation_id: str | None = None,
    user_hash: str | None = None,
    tenant_hash: str | None = None,
    model_version: str | None = None,
    prompt_version: str | None = None,
    feature_flag_state: str | None = None,
    hasher: KeyedHasher | None = None,
) -> Attributes:
    """Run-level attributes that the span tree copies onto every span of the run.

    ``conversation_id`` is the run's own conversation, session or thread id,
    as the application gave it: it is written through
    :meth:`KeyedHasher.conversation_id` (a keyed hash unless the operator chose
    raw conversation ids), so adapters cannot leak it by forgetting to hash.
    ``hasher`` defaults to the one :func:`spanguard.configure` set up.
    ``user_hash`` and ``tenant_hash`` must already be keyed hashes.
    """
    attrs: Attributes = {}
    if conversation_id:
        if hasher is None:
            from spanguard.config import resolve_hasher

            hasher = resolve_hasher(None)
        session = hasher.conversation_id(conversation_id)
        attrs[sc.GEN_AI_CONVERSATION_ID] = session
        attrs[sc.OI_SESSION_ID] = session
    if user_hash:
        attrs[sc.OI_USER_ID] = user_hash
        attrs[sc.USER_HASH] = user_hash
    if tenant_hash:
        attrs[sc.TENANT_HASH] = tenant_hash
    if model_version:
        attrs[sc.MODEL_VERSION] = model_version
    if prompt_version:
        attrs[sc.PROMPT_VERSION] = prompt_version
    if feature_flag_state:
        attrs[sc.FEATURE_FLAG_STATE] = feature_flag_state
    return attrs


_RUN_LEVEL_DEPRECATED = tuple((new, sc.DEPRECATED_NAMES[new]) for new in
                              (sc.MODEL_VERSION, sc.PROMPT_VERSION, sc.FEATURE_FLAG_STATE))


def deprecated_run_attributes(run_attributes: Mapping[str, Any]) -> Attributes:
    """The 0.x names of the run-level fields, for the root span only (one release):
    copied onto every span under the old name as well, they would double the cost."""
    return {old: run_attributes[new] for new, old in _RUN_LEVEL_DEPRECATED
            if new in run_attributes}


def retrieved_document_attributes(
    index: int,
    document_id: str,
    score: float | None = None,
    *,
    content: str | None = None,
    metadata: str | None = None,
) -> Attributes:
    """One retrieved document in OpenInference's flattened ``retrieval.documents.{i}`` form.

    ``metadata`` is a JSON string (what Phoenix expects); ``content`` is only
    passed when the user opted in to content capture.
    """
    prefix = f"{sc.OI_RETRIEVAL_DOCUMENTS}.{index}."
    attrs: Attributes = {prefix + sc.OI_DOCUMENT_ID: document_id}
    if score is not None:
        attrs[prefix + sc.OI_DOCUMENT_SCORE] = score
    if content is not None:
        attrs[prefix + sc.OI_DOCUMENT_CONTENT] = content
    if metadata is not None:
        attrs[prefix + sc.OI_DOCUMENT_METADATA] = metadata
    return attrs
