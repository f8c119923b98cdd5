"""Read what spanguard records out of LlamaIndex objects (models, nodes, responses).

Kept apart from the handlers so that the translation rules — which field means
the model, where a provider reports its usage, which node metadata counts as
provenance — can be read (and tested) in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.schema import NodeWithScore, QueryBundle

from spanguard import genai_messages as gm
from spanguard import semconv as sc
from spanguard.attributes import Attributes, retrieved_document_attributes
from spanguard.hashing import KeyedHasher, canonical_json

# Node metadata keys that say where a chunk came from and which version it is.
# Only these are recorded: arbitrary metadata may hold personal data.
PROVENANCE_KEYS = ("source", "version", "file_name", "page_label", "doc_version")

_UNKNOWN_MODEL = "unknown"  # LLMMetadata's and BaseEmbedding's default model_name


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cache_read: int = 0
    reasoning: int = 0


def model_name(instance: Any) -> str | None:
    """An LLM's ``metadata.model_name`` or an embedding's ``model_name``; None if unset."""
    metadata = getattr(instance, "metadata", None)
    name = getattr(metadata, "model_name", None) if metadata is not None else None
    if not isinstance(name, str):
        name = getattr(instance, "model_name", None)
    if not isinstance(name, str) or not name or name == _UNKNOWN_MODEL:
        return None
    return name


def provider_name(instance: Any) -> str:
    """The integration package (``azure_openai`` for
    ``llama_index.llms.azure_openai.base.AzureOpenAI``), else the class name (a core or
    custom class: ``MockLLM``), for :func:`~spanguard.providers.resolve_provider`."""
    cls = type(instance)
    parts = cls.__module__.split(".")
    if len(parts) > 2 and parts[0] == "llama_index" and parts[1] in ("llms", "embeddings"):
        return parts[2]
    return cls.__name__


def _message_parts(message: Any) -> tuple[str, list[dict[str, Any]], bool]:
    """(role, GenAI parts, asks for tools) of a LlamaIndex ``ChatMessage``."""
    raw_role = getattr(message, "role", "user")
    role = gm.role(str(getattr(raw_role, "value", raw_role)))
    extra = getattr(message, "additional_kwargs", None) or {}
    parts: list[dict[str, Any]] = []
    calls = False
    text = getattr(message, "content", None) or ""
    call_id = extra.get("tool_call_id")
    if role == "tool" and call_id:
        parts.append(gm.tool_response_part(call_id, text))
    elif text:
        parts.append(gm.text_part(text))
    for block in getattr(message, "blocks", None) or ():
        if getattr(block, "block_type", None) == "tool_call":
            calls = True
            parts.append(gm.tool_call_part(block.tool_call_id, block.tool_name,
                                           block.tool_kwargs))
    for call in extra.get("tool_calls") or ():
        # OpenAI's shape ({"id", "function": {"name", "arguments"}}) or a flat one.
        function = _get(call, "function") or call
        arguments = _get(function, "arguments")
        calls = True
        parts.append(gm.tool_call_part(_get(call, "id"), _get(function, "name"),
                                       arguments if arguments is not None
                                       else _get(call, "args")))
    return role, parts, calls


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)


def input_messages(messages: Sequence[Any]) -> tuple[str, Attributes]:
    """A chat call's input in both vocabularies: the GenAI JSON (``parts`` shape) and
    OpenInference's flattened ``llm.input_messages.{i}.message.*``."""
    genai: list[dict[str, Any]] = []
    attrs: Attributes = {}
    for index, message in enumerate(messages):
        role, parts, _ = _message_parts(message)
        genai.append(gm.message(role, parts))
        prefix = f"{sc.OI_LLM_INPUT_MESSAGES}.{index}."
        attrs[prefix + sc.OI_MESSAGE_ROLE] = role
        attrs[prefix + sc.OI_MESSAGE_CONTENT] = getattr(message, "content", None) or ""
    text = canonical_json(genai)
    attrs[sc.GEN_AI_INPUT_MESSAGES] = text
    return text, attrs


def prompt_messages(prompt: str) -> tuple[str, Attributes]:
    """A completion call's prompt as one user message, in both vocabularies."""
    text = canonical_json([gm.message("user", [gm.text_part(prompt)])])
    prefix = f"{sc.OI_LLM_INPUT_MESSAGES}.0."
    return text, {sc.GEN_AI_INPUT_MESSAGES: text, prefix + sc.OI_MESSAGE_ROLE: "user",
                  prefix + sc.OI_MESSAGE_CONTENT: prompt}


def output_messages(response: Any) -> tuple[str, Attributes]:
    """The answer's text and its output message in both vocabularies (the finish reason
    the provider reported in the raw response, else the message's own evidence)."""
    message = getattr(response, "message", None)
    if message is not None:
        role, parts, calls = _message_parts(message)
        text = getattr(message, "content", None) or ""
    else:
        text = getattr(response, "text", None) or ""
        role, parts, calls = "assistant", [gm.text_part(text)], False
    reason = gm.finish_reason(_reported_finish_reason(getattr(response, "raw", None)), calls)
    prefix = f"{sc.OI_LLM_OUTPUT_MESSAGES}.0."
    return text, {sc.GEN_AI_OUTPUT_MESSAGES: canonical_json([gm.message(role, parts, reason)]),
                  prefix + sc.OI_MESSAGE_ROLE: role, prefix + sc.OI_MESSAGE_CONTENT: text}


def _reported_finish_reason(raw: Any) -> Any:
    """OpenAI's ``choices[0].finish_reason``, Anthropic's ``stop_reason``, or a
    ``finish_reason`` at the top; None when the raw response has none."""
    if raw is None:
        return None
    choices = _get(raw, "choices")
    if choices:
        return _get(choices[0], "finish_reason")
    return _get(raw, "stop_reason") or _get(raw, "finish_reason")


def query_text(query: str | QueryBundle | Any) -> str:
    if isinstance(query, QueryBundle):
        return query.query_str
    return str(query)


def retrieval_attributes_for(query: Any, hasher: KeyedHasher, capture: bool) -> Attributes:
    """Query side of a retrieval: a keyed hash always, the text only when captured."""
    text = query_text(query)
    attrs: Attributes = {sc.RETRIEVAL_QUERY_HASH: hasher(text)}
    if capture:
        attrs[sc.GEN_AI_RETRIEVAL_QUERY_TEXT] = text
        attrs[sc.OI_INPUT_VALUE] = text
    return attrs


def retrieved_nodes_attributes(nodes: Sequence[NodeWithScore], capture: bool) -> Attributes:
    """Candidate count, ids, scores, content hashes and provenance of retrieved nodes."""
    chunk_ids: list[str] = []
    document_ids: list[str] = []
    hashes: list[str] = []
    scores: list[float] = []
    attrs: Attributes = {sc.RETRIEVAL_CANDIDATE_COUNT: len(nodes)}
    for i, scored in enumerate(nodes):
        node = scored.node
        chunk_id = node.node_id
        chunk_ids.append(chunk_id)
        document_ids.append(node.ref_doc_id or chunk_id)
        hashes.append("sha256:" + node.hash)
        if scored.score is not None:
            scores.append(float(scored.score))
        attrs.update(retrieved_document_attributes(
            i, chunk_id, scored.score,
            content=node.get_content() if capture else None,
            metadata=_provenance(node.metadata)))
    attrs[sc.RETRIEVAL_CHUNK_IDS] = chunk_ids
    attrs[sc.RETRIEVAL_DOCUMENT_IDS] = document_ids
    attrs[sc.RETRIEVAL_CONTENT_HASHES] = hashes
    if len(scores) == len(nodes):  # a partial list would misalign with the ids
        attrs[sc.RETRIEVAL_SCORES] = scores
    return attrs


def _provenance(metadata: Mapping[str, Any]) -> str | None:
    kept = {key: metadata[key] for key in PROVENANCE_KEYS if key in metadata}
    return json.dumps(kept, sort_keys=True, default=str) if kept else None


def usage_from_response(response: Any) -> Usage | None:
    """Token usage as providers report it through LlamaIndex, or None if not reported.

    Integrations put it in different places: ``additional_kwargs`` (OpenAI's
    ``prompt_tokens``/``completion_tokens``), or the provider's raw response
    (``raw.usage`` as an object or dict, OpenAI or Anthropic field names).
    """
    if response is None:
        return None
    usage = _usage_from_mapping(getattr(response, "additional_kwargs", None))
    if usage is not None:
        return usage
    raw = getattr(response, "raw", None)
    block = raw.get("usage") if isinstance(raw, Mapping) else getattr(raw, "usage", None)
    if block is None:
        return None
    if not isinstance(block, Mapping):
        dump = getattr(block, "model_dump", None)
        block = dump() if callable(dump) else vars(block) if hasattr(block, "__dict__") else None
    return _usage_from_mapping(block)


def _usage_from_mapping(block: Any) -> Usage | None:
    if not isinstance(block, Mapping):
        return None
    inp = block.get("prompt_tokens", block.get("input_tokens"))
    out = block.get("completion_tokens", block.get("output_tokens"))
    if not isinstance(inp, int) or not isinstance(out, int):
        return None
    cached = _nested_int(block, "prompt_tokens_details", "cached_tokens") or _int(
        block.get("cache_read_input_tokens"))
    reasoning = _nested_int(block, "completion_tokens_details", "reasoning_tokens")
    return Usage(inp, out, cached, reasoning)


def _nested_int(block: Mapping[str, Any], outer: str, inner: str) -> int:
    details = block.get(outer)
    if isinstance(details, Mapping):
        return _int(details.get(inner))
    return _int(getattr(details, inner, None))


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def response_model(response: Any) -> str | None:
    raw = getattr(response, "raw", None)
    model = raw.get("model") if isinstance(raw, Mapping) else getattr(raw, "model", None)
    return model if isinstance(model, str) and model else None


def agent_name(workflow: Any) -> str:
    """An agent's ``name`` (``FunctionAgent(name="researcher")``), else the workflow's class.

    Not ``workflow_name``: by default that is the module-qualified class path.
    """
    name = getattr(workflow, "name", None)
    return name if isinstance(name, str) and name else type(workflow).__name__


def tool_name(tool: Any) -> str:
    metadata = getattr(tool, "metadata", None)
    name = getattr(metadata, "name", None)
    return name if isinstance(name, str) and name else type(tool).__name__


def tool_arguments(bound_args: Any) -> Any:
    """What a tool was called with: its keyword arguments, else its positional ones."""
    arguments = getattr(bound_args, "arguments", None)
    if not isinstance(arguments, Mapping):
        return {}
    kwargs = arguments.get("kwargs")
    if isinstance(kwargs, Mapping) and kwargs:
        return dict(kwargs)
    args = arguments.get("args")
    if isinstance(args, tuple) and args:
        return list(args)
    return {key: value for key, value in arguments.items() if key not in ("self", "ctx")}


def tool_call_id(bound_args: Any) -> str | None:
    """The model's id for the call an agent's ``call_tool`` step runs (its ``ToolCall``)."""
    arguments = getattr(bound_args, "arguments", None)
    event = arguments.get("ev") if isinstance(arguments, Mapping) else None
    call_id = getattr(event, "tool_id", None)
    return call_id if isinstance(call_id, str) and call_id else None


def tool_result(output: Any) -> tuple[str | None, bool]:
    """A ``ToolOutput``'s text and whether the tool reported an error."""
    content = getattr(output, "content", None)
    failed = getattr(output, "is_error", False) is True
    return (content if isinstance(content, str) else None), failed


def agent_input(bound_args: Any) -> str | None:
    """The user message a workflow agent's run starts with (its start event's
    ``user_msg``), as text."""
    arguments = getattr(bound_args, "arguments", None)
    if not isinstance(arguments, Mapping):
        return None
    start = arguments.get("start_event")
    message = _get(start, "user_msg") if start is not None else None
    if message is None:
        kwargs = arguments.get("kwargs")
        message = kwargs.get("user_msg") if isinstance(kwargs, Mapping) else None
    if message is None:
        return None
    if isinstance(message, str):
        return message
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else str(message)


def agent_output(result: Any) -> str | None:
    """The answer a workflow agent's run ends with (its ``StopEvent``'s response), as text."""
    value = getattr(result, "result", None)
    if isinstance(value, str):
        return value
    response = _get(value, "response") if value is not None else None
    if response is None:
        return None
    content = _get(response, "content")
    if isinstance(content, str):
        return content
    text = "".join(str(_get(block, "text") or "") for block in _get(response, "blocks") or ())
    return text or None
