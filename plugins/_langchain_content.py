"""Prompt and completion content, written only when the user opted in.

Content is the one thing spanguard does not record by default (it is where
personal data lives). When capture is on, messages are written in both
vocabularies: the OTel GenAI JSON form (``gen_ai.input.messages`` with role and
parts) and OpenInference's flattened ``llm.input_messages.N.message.*`` form.

A chat span records only the input messages new to its call: the leading ones
that an earlier chat span of the run recorded (its history, found in the run's
:class:`~spanguard.transcript.Transcript`) are referenced by count and span id,
so capture grows linearly with the run, not quadratically. Index ``i`` of both
vocabularies is input message ``history + i``. The flattened keys stay within the
:mod:`~spanguard.content_budget`; the GenAI JSON holds every new message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import format_span_id

from spanguard import genai_messages as gm
from spanguard import semconv as sc
from spanguard.content_budget import ContentBudget
from spanguard.hashing import canonical_json
from spanguard.transcript import Recorder, Transcript

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


def _genai_message(message: Any, output: bool = False,
                   reported_reason: Any = None) -> dict[str, Any]:
    """The conventions' shape; ``output`` adds the finish reason (required there)."""
    parts: list[dict[str, Any]] = []
    text = _text(getattr(message, "content", message))
    role = _role(message)
    tool_call_id = getattr(message, "tool_call_id", None)
    if role == "tool" and tool_call_id:
        parts.append(gm.tool_response_part(tool_call_id, text))
    elif text:
        parts.append(gm.text_part(text))
    calls = getattr(message, "tool_calls", None) or ()
    for call in calls:
        parts.append(gm.tool_call_part(call.get("id"), call.get("name"), call.get("args")))
    if not output:
        return gm.message(role, parts)
    return gm.message(role, parts, gm.finish_reason(reported_reason, bool(calls)))


def _openinference_size(message: Any) -> int:
    """How many keys :func:`_openinference_message` writes for ``message``."""
    size = 2 + isinstance(getattr(message, "tool_call_id", None), str)
    for call in getattr(message, "tool_calls", None) or ():
        size += 3 if call.get("id") else 2
    return size


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


def same_message(a: Any, b: Any) -> bool:
    """Equal as recorded: role, text, tool calls (a checkpointer's copy of a message)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, str):
        return bool(a == b)
    return bool(getattr(a, "content", None) == getattr(b, "content", None)
                and getattr(a, "tool_calls", None) == getattr(b, "tool_calls", None)
                and getattr(a, "tool_call_id", None) == getattr(b, "tool_call_id", None)
                and getattr(a, "role", None) == getattr(b, "role", None))


class CallContent:
    """What one chat span captured of its input, for the answer's turn at ``on_llm_end``."""

    __slots__ = ("dropped", "output_budget", "recorder", "transcript")

    def __init__(self, transcript: Transcript | None, recorder: Recorder | None,
                 output_budget: int, dropped: int) -> None:
        self.transcript = transcript
        self.recorder = recorder
        self.output_budget = output_budget
        self.dropped = dropped


def input_content(batches: Sequence[Sequence[Any]], transcript: Transcript | None,
                  budget: ContentBudget) -> tuple[dict[str, Any], CallContent]:
    """Chat input (``messages`` of ``on_chat_model_start``, or prompt strings): the
    messages new to this call, and a reference to the span that recorded the rest.

    Only a single conversation (one batch) is matched against the run's transcript;
    a batch of several is recorded whole.
    """
    recorder: Recorder | None = None
    history = 0
    previous: Recorder | None = None
    if transcript is not None and len(batches) == 1:
        messages: Sequence[Any] = batches[0]
        recorder = Recorder()
        history, previous = transcript.record_inputs(messages, recorder)
    else:
        messages = [message for batch in batches for message in batch]
    new = messages[history:] if history else messages
    attrs: dict[str, Any] = {}
    used, dropped = _flatten(new, sc.OI_LLM_INPUT_MESSAGES, budget.inputs, attrs)
    if new:
        attrs[sc.GEN_AI_INPUT_MESSAGES] = canonical_json([_genai_message(m) for m in new])
    if history:
        attrs[sc.CONTENT_HISTORY_MESSAGES] = history
        if previous is not None and previous.span_id:
            attrs[sc.CONTENT_HISTORY_SPAN_ID] = format_span_id(previous.span_id)
    _mark_truncated(attrs, dropped)
    output_budget = budget.outputs + budget.inputs - used
    return attrs, CallContent(transcript, recorder, output_budget, dropped)


def output_content(result: Any, call: CallContent | None,
                   budget: ContentBudget) -> dict[str, Any]:
    """Chat output from an ``LLMResult``: one message per generation. The first
    generation continues the conversation in the run's transcript."""
    messages: list[Any] = []
    reasons: list[Any] = []
    for candidates in result.generations:
        for generation in candidates:
            message = getattr(generation, "message", None)
            messages.append(message or generation.text)
            reasons.append(reported_finish_reason(generation.generation_info, message))
    attrs: dict[str, Any] = {}
    room = call.output_budget if call is not None else budget.outputs
    _, dropped = _flatten(messages, sc.OI_LLM_OUTPUT_MESSAGES, room, attrs)
    attrs[sc.GEN_AI_OUTPUT_MESSAGES] = canonical_json(
        [_genai_message(m, True, reasons[i]) for i, m in enumerate(messages)])
    if dropped:
        _mark_truncated(attrs, dropped + (call.dropped if call is not None else 0))
    if (call is not None and call.transcript is not None and call.recorder is not None
            and messages):
        call.transcript.record_output(call.recorder, messages[0])
    return attrs


def reported_finish_reason(info: Any, message: Any) -> Any:
    """What the provider said about why it stopped: ``generation_info`` first, else the
    message's ``response_metadata`` (where most chat integrations put it)."""
    if info:
        reason = info.get("finish_reason")
        if reason:
            return reason
    metadata = getattr(message, "response_metadata", None)
    if metadata:
        return metadata.get("finish_reason") or metadata.get("stop_reason")
    return None


def _flatten(messages: Sequence[Any], oi_key: str, budget: int,
             attrs: dict[str, Any]) -> tuple[int, int]:
    """OpenInference keys for the leading messages that fit ``budget``; (used, dropped)."""
    used = 0
    dropped = 0
    for index, message in enumerate(messages):
        size = _openinference_size(message)
        if dropped or used + size > budget:
            dropped += size
            continue
        _openinference_message(f"{oi_key}.{index}", message, attrs)
        used += size
    return used, dropped


def _mark_truncated(attrs: dict[str, Any], dropped: int) -> None:
    if dropped:
        attrs[sc.CONTENT_TRUNCATED] = True
        attrs[sc.CONTENT_DROPPED_ATTRIBUTES] = dropped


def value_text(value: Any) -> str:
    """Tool arguments/results and retrieval queries as one string attribute."""
    if isinstance(value, str):
        return value
    content = getattr(value, "content", None)
    if content is not None:
        return _text(content)
    return canonical_json(value)


def _message_text(message: Any) -> tuple[str, str]:
    """(role, text) of a message, a ``(role, text)`` tuple or a plain string."""
    if isinstance(message, tuple) and len(message) == 2:
        return gm.role(str(message[0])), _text(message[1])
    if isinstance(message, str):
        return "user", message
    return _role(message), _text(getattr(message, "content", message))


def _messages_of(value: Any) -> list[Any] | None:
    messages = value.get("messages") if isinstance(value, dict) else None
    if isinstance(messages, list) and messages:
        return messages
    return None


def run_input(inputs: Any) -> str:
    """A run's input as its trace shows it (content capture only): the text of a single
    input message, the messages as ``[{"role", "content"}]`` JSON, or the inputs as JSON."""
    messages = _messages_of(inputs)
    if messages is None:
        return value_text(inputs)
    if len(messages) == 1:
        return _message_text(messages[0])[1]
    return canonical_json([{"role": role, "content": text}
                           for role, text in map(_message_text, messages)])


def run_output(outputs: Any) -> str:
    """A run's output as its trace shows it: the last message's text (the answer)."""
    messages = _messages_of(outputs)
    if messages is None:
        return value_text(outputs)
    return _message_text(messages[-1])[1]
