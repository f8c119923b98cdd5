"""What the proxy lets through from a client, decided before any guard sees a message.

The guard can only hold what it sees, so every client frame is read once,
strictly (:mod:`._proxy_codec`), and sorted into exactly one of: a request to
forward, a notification to forward, a response (to a server's request) to
forward, a batch, or a refusal. Anything that could make the server run a tool
without the guard seeing it is a refusal, and a refusal is never forwarded:

- a frame that is not strict JSON, nests too deep, or repeats a key;
- a JSON-RPC **batch**: MCP removed batches in protocol 2025-06-18, SDK-built
  servers never answer one, and a tool call inside a batch cannot be held on
  its own. Every request in it gets its own ``-32600`` in one batch answer;
- a ``tools/call`` **notification** (no id): it cannot be answered, so it cannot
  be held or refused either; it is dropped and logged;
- a method **spelled like** ``tools/call`` that is not exactly it (case, spaces,
  other separators, look-alike characters): a lenient server might run it;
- a ``tools/call`` whose ``name`` is not a string or whose ``arguments`` are not
  an object (``-32602 Invalid params``): the guard would otherwise judge a
  different call from the one the server runs;
- an id that is neither a string nor an integer that fits in 64 bits.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from spanguard.mcp_bridge import _proxy_codec as codec
from spanguard.mcp_bridge._proxy_messages import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Message,
    RequestId,
    error_object,
)
from spanguard.mcp_bridge._proxy_splice import deeper_than, top_level_id

__all__ = [
    "TOOL_CALL",
    "Batch",
    "Notification",
    "Refusal",
    "Request",
    "Response",
    "admit",
    "answer_id",
    "batch_answer",
    "request_id",
]

TOOL_CALL = "tools/call"
_ID_MIN, _ID_MAX = -(2**63), 2**63 - 1
BATCH_REFUSED = ("Invalid Request: JSON-RPC batches are not accepted (MCP removed them in "
                 "protocol 2025-06-18, and a tool call in a batch cannot be held on its "
                 "own); send each request as its own message")


@dataclass(slots=True)
class Refusal:
    """A frame that is not forwarded. ``answer``: send the error (False for a
    notification or a response, which must not be answered: the reason is logged)."""

    request_id: RequestId | None
    code: int
    reason: str
    answer: bool = True


@dataclass(slots=True)
class Request:
    """A request to forward; for ``tools/call``, ``tool`` and ``arguments`` are what the
    server will read (``arguments`` is ``{}`` when the client sent none)."""

    message: Message
    method: str
    request_id: RequestId
    tool: str | None = None
    arguments: dict[str, Any] | None = None


@dataclass(slots=True)
class Notification:
    message: Message
    method: str


@dataclass(slots=True)
class Response:
    """A client's answer to a request the server sent it (sampling, roots, elicitation)."""

    message: Message


@dataclass(slots=True)
class Batch:
    members: list[Any]


Admitted = Request | Notification | Response | Batch | Refusal


def request_id(value: object) -> RequestId | None:
    """``value`` if it is a usable id: a string, or an integer within 64 bits."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and _ID_MIN <= value <= _ID_MAX:
        return value
    return None


def answer_id(value: object) -> RequestId | None:
    """The id to echo in an error answer: any string or integer (else null), so a
    client whose id the proxy refuses can still match the answer to its request."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def looks_like_tool_call(method: str) -> bool:
    """Whether a lenient server might take ``method`` for ``tools/call``."""
    folded = unicodedata.normalize("NFKC", method).casefold()
    return "".join(c for c in folded if c.isalnum()) == "toolscall"


def admit(frame: bytes) -> Admitted:
    """The one reading of a client frame (never raises for any input)."""
    try:
        loose = codec.validate(frame)
    except ValueError as exc:
        if deeper_than(frame, codec.MAX_DEPTH):
            return Refusal(answer_id(top_level_id(frame)), INVALID_REQUEST,
                           f"Invalid Request: {codec.TooDeep()}")
        return Refusal(None, PARSE_ERROR, f"Parse error: {exc}")
    if isinstance(loose, list):
        return Batch(_exact_or(frame, loose))
    if codec.nesting_exceeds(frame, loose):
        return _refusal(frame, loose, f"Invalid Request: {codec.TooDeep()}")
    try:
        message = codec.loads(frame)
    except codec.DuplicateKey as exc:
        return _refusal(frame, loose, f"Invalid Request: {exc}")
    if not isinstance(message, dict):
        return Refusal(None, INVALID_REQUEST, "Invalid Request: not a JSON-RPC message")
    return _sort(message)


def _exact_or(frame: bytes, loose: list[Any]) -> list[Any]:
    """A batch's exact reading (ids keep every digit), else orjson's: it is refused anyway."""
    if codec.nesting_exceeds(frame, loose):
        return loose
    try:
        exact: list[Any] = codec.loads(frame)
    except codec.DuplicateKey:
        return loose
    return exact


def _refusal(frame: bytes, loose: Any, reason: str) -> Refusal:
    """A frame refused before its exact reading: its id is read from the bytes (orjson
    turned an integer id above 2^64 into a float)."""
    answer = not isinstance(loose, dict) or "id" in loose
    return Refusal(answer_id(top_level_id(frame)), INVALID_REQUEST, reason, answer)


def _sort(message: Message) -> Admitted:
    has_id = "id" in message
    raw_id = message.get("id")
    rid = request_id(raw_id)
    echo = answer_id(raw_id)
    is_response = "result" in message or "error" in message
    if "method" not in message:
        if has_id and is_response and rid is not None:
            return Response(message)
        return Refusal(echo, INVALID_REQUEST, "Invalid Request: neither a request, a "
                       "notification nor a response", answer=has_id and not is_response)
    method = message["method"]
    if not isinstance(method, str):
        return Refusal(echo, INVALID_REQUEST, "Invalid Request: method must be a string",
                       answer=has_id)
    if is_response:
        return Refusal(echo, INVALID_REQUEST, "Invalid Request: a request cannot also carry "
                       "a result or an error", answer=has_id)
    tool_like = method != TOOL_CALL and looks_like_tool_call(method)
    if not has_id:
        if method == TOOL_CALL:
            return Refusal(None, INVALID_REQUEST, "a tools/call without an id is a "
                           "notification, which cannot be answered, held or refused; it "
                           "was not forwarded", answer=False)
        if tool_like:
            return Refusal(None, METHOD_NOT_FOUND, _tool_like(method), answer=False)
        return Notification(message, method)
    if rid is None:
        if echo is not None:
            return Refusal(echo, INVALID_REQUEST,
                           "Invalid Request: id is outside the 64-bit integer range")
        return Refusal(None, INVALID_REQUEST,
                       "Invalid Request: id must be a string or an integer")
    if tool_like:
        return Refusal(rid, METHOD_NOT_FOUND, _tool_like(method))
    if method != TOOL_CALL:
        return Request(message, method, rid)
    return _tool_call(message, rid)


def _tool_like(method: str) -> str:
    return (f"Method not found: {method[:80]!r} is not tools/call, and the proxy does not "
            "forward a method a server might take for it")


def _tool_call(message: Message, rid: RequestId) -> Request | Refusal:
    params = message.get("params")
    if not isinstance(params, dict):
        return Refusal(rid, INVALID_PARAMS, "Invalid params: tools/call needs params as an "
                       "object with the tool's name")
    name = params.get("name")
    if not isinstance(name, str):
        return Refusal(rid, INVALID_PARAMS, "Invalid params: the tool name must be a string")
    arguments = params.get("arguments")
    if arguments is None:
        arguments = {}
    elif not isinstance(arguments, dict):
        return Refusal(rid, INVALID_PARAMS, f"Invalid params: arguments of {name[:80]!r} must "
                       f"be an object, got {_json_type(arguments)}")
    return Request(message, TOOL_CALL, rid, name, arguments)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def batch_answer(members: list[Any]) -> Message | list[Message] | None:
    """The answer to a refused batch: one error per request in it (None: nothing to send).

    As JSON-RPC 2.0 asks: notifications and responses in it get no answer, an
    entry that is not a JSON-RPC message gets an error with id null, and an
    empty batch gets one error (not an array).
    """
    if not members:
        return error_object(None, INVALID_REQUEST, "Invalid Request: empty batch")
    answers: list[Message] = []
    for member in members:
        if not isinstance(member, dict):
            answers.append(error_object(None, INVALID_REQUEST, BATCH_REFUSED))
        elif "method" in member and "id" in member:
            answers.append(error_object(answer_id(member["id"]), INVALID_REQUEST,
                                        BATCH_REFUSED))
        elif "method" not in member and not ("id" in member and (
                "result" in member or "error" in member)):
            answers.append(error_object(None, INVALID_REQUEST, BATCH_REFUSED))
    return answers or None
