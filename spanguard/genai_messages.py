"""Chat messages in the GenAI conventions' JSON shape (``gen_ai.input.messages`` /
``gen_ai.output.messages``), shared by the adapters that capture content.

The pinned conventions (:data:`~spanguard.semconv.GENAI_SEMCONV_VERSION`) define a
message as ``{"role", "parts": [...]}`` where a part is ``{"type": "text", "content"}``,
``{"type": "tool_call", "id", "name", "arguments"}`` or ``{"type": "tool_call_response",
"id", "response"}``; an output message also carries a ``finish_reason``, one of
``stop``, ``length``, ``content_filter``, ``tool_call``, ``error`` when one of them
applies. Providers report their own spellings (OpenAI ``tool_calls``, Anthropic
``end_turn`` / ``tool_use`` / ``max_tokens``, Gemini ``MAX_TOKENS``); this module maps
them. A message whose provider reported no reason gets the one the message itself
shows: ``tool_call`` when it asks for tools, else ``stop``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["finish_reason", "message", "role", "text_part", "tool_call_part",
           "tool_response_part"]

_FINISH_REASONS = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "eos": "stop",
    "complete": "stop", "finish_reason_stop": "stop",
    "length": "length", "max_tokens": "length", "model_length": "length",
    "max_output_tokens": "length",
    "content_filter": "content_filter", "safety": "content_filter",
    "recitation": "content_filter", "blocklist": "content_filter",
    "prohibited_content": "content_filter", "refusal": "content_filter",
    "tool_call": "tool_call", "tool_calls": "tool_call", "tool_use": "tool_call",
    "function_call": "tool_call",
    "error": "error",
}
_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "model": "assistant", "chatbot": "assistant", "system": "system",
          "developer": "system", "tool": "tool", "function": "tool"}


def finish_reason(reported: Any, asks_for_tools: bool = False) -> str:
    """The conventions' value for a provider's finish reason (its own spelling kept when
    none applies); the message's own evidence when the provider reported none."""
    if isinstance(reported, str) and reported:
        return _FINISH_REASONS.get(reported.lower(), reported)
    return "tool_call" if asks_for_tools else "stop"


def role(name: str) -> str:
    """A framework's role name as the conventions spell it (``human`` -> ``user``)."""
    return _ROLES.get(name.lower(), name) if name else "user"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def tool_call_part(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def tool_response_part(call_id: Any, response: Any) -> dict[str, Any]:
    return {"type": "tool_call_response", "id": call_id, "response": response}


def message(role_name: str, parts: Iterable[dict[str, Any]],
            reason: str | None = None) -> dict[str, Any]:
    """One message; ``reason`` (already mapped) makes it an output message."""
    out: dict[str, Any] = {"role": role_name, "parts": list(parts)}
    if reason is not None:
        out["finish_reason"] = reason
    return out
