"""Prompt and completion content, written only when the user opted in.

Content is the one thing spanguard does not record by default (it is where
personal data lives). When capture is on, messages are written in both
vocabularies: the OTel GenAI JSON form (``gen_ai.input.messages`` with role and
parts) and OpenInference's flattened ``llm.input_messages.N.message.*`` form.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from spanguard import semconv as sc
from spanguard.hashing import canonical_json

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_TRUE = frozenset({"true", "1", "yes", "span_only", "span_and_event"})
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
          "function": "tool", "AIMessageChunk": "assistant"}


def capture_from_env() -> bool:
    """The OTel GenAI switch; any value other than a true-ish one means off."""
    return os.environ.get(CAPTURE_ENV, "").strip().lower() in _TRUE


def _role(message: Any) -> str:
    role = getattr(message, "role", None)
    if isinstance(role, str):
        return role
    kind = getattr(message, "type", "")
    return _ROLES.get(kind, kind or "user")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for block in content:
            if isinstance(block, str):
                pieces.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                pieces.append(block["text"])
        return "".join(pieces)
    return str(content)


def _genai_message(message: Any, finish_reason: str | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    text = _text(getattr(message, "content", message))
    role = _role(message)
    tool_call_id = getattr(message, "tool_call_id", None)
    if role == "tool" and tool_call_id:
        parts.append({"type": "tool_call_response", "id": tool_call_id, "response": text})
    elif text:
        parts.append({"type": "text", "content": text})
    for call in getattr(message, "tool_calls", None) or ():
        parts.append({"type": "tool_call", "id": call.get("id"), "name": call.get("name"),
                      "arguments": call.get("args")})
    out: dict[str, Any] = {"role": role, "parts": parts}
    if finish_reason:
        out["finish_reason"] = finish_reason
    return out


def _openinference_message(prefix: str, message: Any, attrs: dict[str, Any]) -> None:
    attrs[f"{prefix}.{sc.OI_MESSAGE_ROLE}"] = _role(message)
    attrs[f"{prefix}.{sc.OI_MESSAGE_CONTENT}"] = _text(getattr(message, "content", message))
    tool_call_id = getattr(message, "tool_call_id", None)
    if isinstance(tool_call_id, str):
        attrs[f"{prefix}.{sc.OI_MESSAGE_TOOL_CALL_ID}"] = tool_call_id
    for index, call in enumerate(getattr(message, "tool_calls", None) or ()):
        call_prefix = f"{prefix}.{sc.OI_MESSAGE_TOOL_CALLS}.{index}"
        attrs[f"{call_prefix}.{sc.OI_TOOL_CALL_FUNCTION_NAME}"] = str(call.get("name"))
        attrs[f"{call_prefix}.{sc.OI_TOOL_CALL_FUNCTION_ARGUMENTS}"] = canonical_json(
            call.get("args"))
        if call.get("id"):
            attrs[f"{call_prefix}.{sc.OI_TOOL_CALL_ID}"] = str(call["id"])


def input_message_attributes(batches: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Chat input (``messages`` of ``on_chat_model_start``, or prompt strings)."""
    messages = [message for batch in batches for message in batch] if batches else []
    return _message_attributes(messages, sc.GEN_AI_INPUT_MESSAGES, sc.OI_LLM_INPUT_MESSAGES,
                               None)


def output_message_attributes(result: Any) -> dict[str, Any]:
    """Chat output from an ``LLMResult``: one message per generation."""
    messages: list[Any] = []
    reasons: list[str | None] = []
    for candidates in result.generations:
        for generation in candidates:
            messages.append(getattr(generation, "message", None) or generation.text)
            info = generation.generation_info or {}
            reasons.append(info.get("finish_reason"))
    return _message_attributes(messages, sc.GEN_AI_OUTPUT_MESSAGES, sc.OI_LLM_OUTPUT_MESSAGES,
                               reasons)


def _message_attributes(messages: Iterable[Any], genai_key: str, oi_key: str,
                        reasons: Sequence[str | None] | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    genai = []
    for index, message in enumerate(messages):
        reason = reasons[index] if reasons is not None and index < len(reasons) else None
        genai.append(_genai_message(message, reason))
        _openinference_message(f"{oi_key}.{index}", message, attrs)
    attrs[genai_key] = canonical_json(genai)
    return attrs


def value_text(value: Any) -> str:
    """Tool arguments/results and retrieval queries as one string attribute."""
    if isinstance(value, str):
        return value
    content = getattr(value, "content", None)
    if content is not None:
        return _text(content)
    return canonical_json(value)
