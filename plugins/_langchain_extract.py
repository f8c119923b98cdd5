"""Read model parameters, usage, finish reasons and run ids out of LangChain callback payloads.

LangChain reports the same facts in several places depending on the provider
package and its age (``invocation_params``, ``ls_*`` metadata, ``llm_output``,
``response_metadata``, ``usage_metadata``). These functions look in each, in a
fixed order, duck-typed so that no provider package needs to be importable.
They never raise on odd values: a field that is not the expected type is
treated as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spanguard import semconv as sc
from spanguard.attributes import run_identity_attributes
from spanguard.hashing import canonical_json
from spanguard.runcontext import RunContext


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return 0


def request_model(params: Mapping[str, Any] | None,
                  metadata: Mapping[str, Any] | None) -> str | None:
    """The model asked for: the invocation parameters first, then ``ls_model_name``."""
    if params:
        for key in ("model", "model_name", "model_id"):
            name = _str(params.get(key))
            if name:
                return name
    if metadata:
        return _str(metadata.get("ls_model_name"))
    return None


def request_provider(params: Mapping[str, Any] | None,
                     metadata: Mapping[str, Any] | None) -> str | None:
    """The provider as LangChain names it: ``ls_provider`` (every chat model reports one:
    its integration's, else its class name), else the model's ``_type``."""
    if metadata:
        name = _str(metadata.get("ls_provider"))
        if name:
            return name
    return _str(params.get("_type")) if params else None


def request_parameters(params: Mapping[str, Any] | None,
                       metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """temperature / top_p / max_tokens as ``model_attributes`` keyword arguments.

    Runs once per model call: only keys that are present are converted.
    """
    out: dict[str, Any] = {}
    if params:
        value = _num(params.get("temperature"))
        if value is not None:
            out["temperature"] = value
        value = _num(params.get("top_p"))
        if value is not None:
            out["top_p"] = value
        for key in _MAX_TOKENS_KEYS:
            value = _num(params.get(key))
            if value is not None:
                out["max_tokens"] = int(value)
                break
    if metadata:
        if "temperature" not in out:
            value = _num(metadata.get("ls_temperature"))
            if value is not None:
                out["temperature"] = value
        if "max_tokens" not in out:
            value = _num(metadata.get("ls_max_tokens"))
            if value is not None:
                out["max_tokens"] = int(value)
    return out


_MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def request_key(params: Mapping[str, Any] | None,
                metadata: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """Every raw value :func:`request_model`, :func:`request_parameters` and the provider
    are read from: equal keys give equal request attributes, so a handler can cache them.

    Only these values, never the whole mapping (which may hold unhashable tool lists).
    A caller must be ready for an unhashable value among them (``TypeError`` on lookup).
    """
    p = params or _EMPTY
    m = metadata or _EMPTY
    return (p.get("model"), p.get("model_name"), p.get("model_id"), p.get("temperature"),
            p.get("top_p"), p.get("max_tokens"), p.get("max_completion_tokens"),
            p.get("max_output_tokens"), p.get("_type"), m.get("ls_model_name"),
            m.get("ls_provider"), m.get("ls_temperature"), m.get("ls_max_tokens"))


_EMPTY: Mapping[str, Any] = {}


class Usage:
    """Token counts of one model call, summed over streamed chunks when needed."""

    __slots__ = ("cache_creation", "cache_read", "input", "output", "reasoning")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cache_read = 0
        self.cache_creation = 0
        self.reasoning = 0

    def add(self, usage: Mapping[str, Any]) -> None:
        """Add one LangChain ``UsageMetadata`` mapping."""
        self.input += _int(usage.get("input_tokens"))
        self.output += _int(usage.get("output_tokens"))
        details = usage.get("input_token_details")
        if details:
            self.cache_read += _int(details.get("cache_read"))
            self.cache_creation += _int(details.get("cache_creation"))
        details = usage.get("output_token_details")
        if details:
            self.reasoning += _int(details.get("reasoning"))

    @classmethod
    def from_openai_style(cls, token_usage: Mapping[str, Any]) -> Usage:
        """Older integrations report ``llm_output["token_usage"]`` in OpenAI's names."""
        usage = cls()
        usage.input = _int(token_usage.get("prompt_tokens"))
        usage.output = _int(token_usage.get("completion_tokens"))
        return usage


class Response:
    """What ``on_llm_end`` says about the answer, collected in one pass.

    Runs once per model call on the hot path, so the per-generation reads are
    inline rather than split into helpers.
    """

    __slots__ = ("finish_reasons", "model", "response_id", "usage")

    def __init__(self, result: Any) -> None:
        usage: Usage | None = None
        reasons: list[str] = []
        model: str | None = None
        response_id: str | None = None
        for candidates in result.generations:
            for generation in candidates:
                info = generation.generation_info
                if info:
                    reason = info.get("finish_reason")
                    if isinstance(reason, str) and reason:
                        reasons.append(reason)
                message = getattr(generation, "message", None)
                if message is None:
                    continue
                if usage is None:
                    reported = getattr(message, "usage_metadata", None)
                    if reported:
                        usage = Usage()
                        usage.add(reported)
                metadata = getattr(message, "response_metadata", None)
                if metadata:
                    if not info or "finish_reason" not in info:
                        reason = metadata.get("finish_reason") or metadata.get("stop_reason")
                        if isinstance(reason, str) and reason:
                            reasons.append(reason)
                    if model is None:
                        model = _str(metadata.get("model_name")) or _str(metadata.get("model"))
                if response_id is None:
                    message_id = getattr(message, "id", None)
                    # LangChain invents "run-..."/"lc_run-..." ids when the provider
                    # sent none.
                    if (isinstance(message_id, str) and message_id
                            and not message_id.startswith(("run-", "lc_run"))):
                        response_id = message_id
        output = result.llm_output
        if isinstance(output, Mapping):
            model = model or _str(output.get("model_name")) or _str(output.get("model"))
            token_usage = output.get("token_usage")
            if usage is None and isinstance(token_usage, Mapping):
                usage = Usage.from_openai_style(token_usage)
        self.usage = usage
        self.finish_reasons = reasons
        self.model = model
        self.response_id = response_id

    def attributes(self) -> dict[str, Any]:
        """Response-side attributes other than usage and cost."""
        attrs: dict[str, Any] = {}
        if self.model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = self.model
        if self.response_id:
            attrs[sc.GEN_AI_RESPONSE_ID] = self.response_id
        if self.finish_reasons:
            attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = self.finish_reasons
            attrs[sc.OI_LLM_FINISH_REASON] = self.finish_reasons[0]
        return attrs


def document_ids(documents: Any) -> list[str]:
    """Ids of retrieved documents that carry one (``Document.id`` or metadata ``id``)."""
    ids: list[str] = []
    for document in documents:
        doc_id = getattr(document, "id", None)
        if not doc_id:
            metadata = getattr(document, "metadata", None)
            doc_id = metadata.get("id") if isinstance(metadata, Mapping) else None
        if doc_id:
            ids.append(str(doc_id))
    return ids


def serialized_name(serialized: Mapping[str, Any] | None, default: str) -> str:
    """A run's name from its ``serialized`` description (``name``, else the class id)."""
    if serialized:
        name = serialized.get("name")
        if isinstance(name, str) and name:
            return name
        ident = serialized.get("id")
        if isinstance(ident, list) and ident:
            return str(ident[-1])
    return default


def text_id(value: Any) -> str | None:
    """An id as text: strings as they are, anything else as canonical JSON."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else canonical_json(value)


def run_ids(metadata: Mapping[str, Any] | None, identity: str | None,
            outer: RunContext | None) -> RunContext | None:
    """Who a root run is for: its metadata's ids, the rest from the enclosing context.

    ``identity`` (the handler's own maker) wins over the metadata's ``identity``.
    """
    if metadata:
        user = text_id(metadata.get("user_id"))
        tenant = text_id(metadata.get("tenant_id"))
        conversation = (text_id(metadata.get("conversation_id"))
                        or text_id(metadata.get("session_id"))
                        or text_id(metadata.get("thread_id")))
        identity = identity or text_id(metadata.get("identity"))
        if user or tenant or conversation or identity:
            return RunContext(user, tenant, conversation, identity).over(outer)
    elif identity:
        return RunContext(identity=identity).over(outer)
    return outer


def version_attributes(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The run's model/prompt version and feature flags, when its metadata names them."""
    return run_identity_attributes(
        model_version=text_id(metadata.get(sc.META_MODEL_VERSION)),
        prompt_version=text_id(metadata.get(sc.META_PROMPT_VERSION)),
        feature_flag_state=text_id(metadata.get(sc.META_FEATURE_FLAG_STATE)))


def response_text(response: Any) -> str | None:
    """The text of a model run's first generation (what the answer guards read)."""
    generations = getattr(response, "generations", None)
    if not generations or not generations[0]:
        return None
    text = getattr(generations[0][0], "text", None)
    return text if isinstance(text, str) and text else None
