"""A stdio MCP server that implements all of JSON-RPC 2.0, and reads it leniently.

The gateway tests need an upstream that would run anything that reaches it:
unlike the SDK's servers it answers batches and executes notifications (as the
JSON-RPC 2.0 spec says it must), and like many hand-written servers it is
lenient: the FIRST of two duplicate keys wins (the proxy's parser keeps the
last), and any method that reads as tools/call once case and punctuation are
dropped runs a tool. Integers keep every digit.

Every tool it executes is appended to the log as one JSON line: ``{"id", "method",
"tool", "arguments", "batch"}`` (arguments over 4 KiB as their size), so a test
checks what ran, not what the proxy says.

Tools: ``echo`` (read-only; returns its arguments as text), ``wipe``
(destructive), ``nest`` (returns ``structuredContent`` nested ``depth`` levels),
``read`` (read-only; returns ``key``), ``stall`` (never answers), ``twice``
(answers twice). Methods: ``initialize``, ``ping``, ``tools/list`` (which it
never answers when started with ``--silent-list``, logging it with ``"tool":
null`` instead); anything else -32601.
Answers to the client's requests come back in a batch when ``--batch-answers``.
Usage: spec_server.py LOG_FILE [--silent-list] [--batch-answers]
"""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any

TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": True, "idempotentHint": True}},
    {"name": "wipe", "inputSchema": {"type": "object"},
     "annotations": {"destructiveHint": True, "readOnlyHint": False}},
    {"name": "nest", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": True}},
    {"name": "read", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": True}},
    {"name": "stall", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": True}},
    {"name": "twice", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": True}},
]


def first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        value.setdefault(key, item)
    return value


DECODER = json.JSONDecoder(object_pairs_hook=first_wins)


def is_tool_call(method: object) -> bool:
    if not isinstance(method, str):
        return False
    folded = unicodedata.normalize("NFKC", method).casefold()
    return "".join(c for c in folded if c.isalnum()) == "toolscall"


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"down": value}
    return value


class Server:
    def __init__(self, log_path: str, silent_list: bool) -> None:
        self.log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115
        self.silent_list = silent_list

    def handle(self, message: Any, raw: str, batch: bool) -> list[dict[str, Any]]:
        """The answers to one message (none for a notification or a response)."""
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            if isinstance(message, dict) and ("result" in message or "error" in message):
                return []
            return [error(None, -32600, "Invalid Request")]
        method = message["method"]
        has_id = "id" in message
        rid = message.get("id")
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        answers: list[dict[str, Any]] = []
        if is_tool_call(method):
            answers = self.call_tool(rid, method, params, raw, batch)
        elif method == "initialize":
            answers = [ok(rid, {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                                "capabilities": {"tools": {}},
                                "serverInfo": {"name": "spec", "version": "1"}})]
        elif method == "tools/list" and self.silent_list:
            self.record({"id": rid, "method": method, "tool": None})
        elif method == "tools/list":
            answers = [ok(rid, {"tools": TOOLS})]
        elif method == "ping":
            answers = [ok(rid, {})]
        elif has_id:
            answers = [error(rid, -32601, f"Method not found: {method}")]
        return answers if has_id else []

    def record(self, entry: dict[str, Any]) -> None:
        self.log.write(json.dumps(entry) + "\n")
        self.log.flush()

    def call_tool(self, rid: Any, method: str, params: dict[str, Any], raw: str,
                  batch: bool) -> list[dict[str, Any]]:
        name = params.get("name")
        arguments = params.get("arguments")
        logged = arguments if len(raw) <= 4096 else {"size": len(raw)}
        self.record({"id": rid, "method": method, "tool": name, "arguments": logged,
                     "batch": batch})
        args = arguments if isinstance(arguments, dict) else {}
        if name == "stall":
            return []
        if name == "nest":
            depth = args.get("depth", 1)
            return [ok(rid, {"content": [{"type": "text", "text": "nested"}],
                             "structuredContent": nested(depth if isinstance(depth, int)
                                                         else 1)})]
        if name == "read":
            return [ok(rid, text(str(args.get("key"))))]
        if name == "twice":
            return [ok(rid, text("first")), ok(rid, text("second"))]
        if name in ("echo", "wipe"):
            return [ok(rid, text(json.dumps(arguments)))]
        return [ok(rid, text(f"unknown tool {name}", is_error=True))]


def text(value: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": is_error}


def ok(rid: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def send(value: Any) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main() -> None:
    sys.setrecursionlimit(20_000)
    server = Server(sys.argv[1], "--silent-list" in sys.argv)
    batch_answers = "--batch-answers" in sys.argv
    for line in sys.stdin:
        raw = line.rstrip("\n")
        try:
            message = DECODER.decode(raw)
        except (ValueError, RecursionError):
            send(error(None, -32700, "Parse error"))
            continue
        if isinstance(message, list):
            if not message:
                send(error(None, -32600, "Invalid Request"))
                continue
            answers = [a for member in message for a in server.handle(member, raw, True)]
            if answers:
                send(answers)
            continue
        answers = server.handle(message, raw, False)
        if batch_answers and answers:
            send(answers)
        else:
            for answer in answers:
                send(answer)


if __name__ == "__main__":
    main()
