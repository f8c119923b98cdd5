"""The text of a LangChain model request and of its reply, for the guards' token estimates.

Budgets estimate a call from its own text when the run has no history yet, when
several calls of the run are in flight, and when the provider reports no usage
(:mod:`spanguard.guardrails.estimate`). The guards never see LangChain objects,
so the handler hands them these functions as thunks: nothing here runs unless a
guard asks. One string per message (system prompt included), tool calls with
their arguments, and the bound tools' schemas from the invocation parameters
(what ``bind_tools`` sends). Images and audio are not counted: providers bill
them by their own rules, not by the size of their encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spanguard.hashing import canonical_json

_MEDIA = frozenset({"image", "image_url", "audio", "input_audio", "file", "video"})
_TOOL_PARAMS = ("tools", "functions")


def request_text(messages: Sequence[Sequence[Any]],
                 params: Mapping[str, Any] | None) -> Callable[[], list[str]]:
    """A thunk for the request's text: the messages (or prompt strings) and tools."""
    def text() -> list[str]:
        parts = [_message(message) for batch in messages for message in batch]
        if params:
            for key in _TOOL_PARAMS:
                tools = params.get(key)
                if tools:
                    parts.append(canonical_json(tools))
        return parts

    return text


def reply_text(result: Any) -> Callable[[], list[str]]:
    """A thunk for the text of an ``LLMResult``'s generations (and their tool calls)."""
    def text() -> list[str]:
        return [_message(getattr(generation, "message", None) or generation.text)
                for candidates in result.generations for generation in candidates]

    return text


def _message(message: Any) -> str:
    if isinstance(message, str):
        return message
    text = _content(getattr(message, "content", ""))
    calls = getattr(message, "tool_calls", None)
    if calls:
        text += canonical_json([[call.get("name"), call.get("args")] for call in calls])
    return text


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return str(content)
    pieces = []
    for block in content:
        if isinstance(block, str):
            pieces.append(block)
        elif isinstance(block, dict):
            if isinstance(block.get("text"), str):
                pieces.append(block["text"])
            elif block.get("type") not in _MEDIA:
                pieces.append(canonical_json(block))
    return "\n".join(pieces)
