"""A raw stdio MCP server for the proxy's fault tests: it logs every frame it reads.

Not built on the SDK on purpose: the tests need to see the exact bytes the proxy
forwards (``_meta``, cancellations, responses to server-to-client requests) and
to misbehave on command (crash mid-call, answer oversized, ignore SIGTERM).
Usage: recorder.py LOG_FILE [--ignore-term]
"""

from __future__ import annotations

import json
import os
import signal
import sys

TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": True, "idempotentHint": True}},
    {"name": "wipe", "inputSchema": {"type": "object"},
     "annotations": {"destructiveHint": True, "readOnlyHint": False}},
    {"name": "slow", "inputSchema": {"type": "object"}},
    {"name": "crash", "inputSchema": {"type": "object"}},
    {"name": "ask", "inputSchema": {"type": "object"}},
    {"name": "big", "inputSchema": {"type": "object"}},
    {"name": "pid", "inputSchema": {"type": "object"}},
]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def result(request_id: object, text: str, is_error: bool = False) -> None:
    send({"jsonrpc": "2.0", "id": request_id,
          "result": {"content": [{"type": "text", "text": text}], "isError": is_error}})


def main() -> None:
    log = open(sys.argv[1], "a", encoding="utf-8")  # noqa: SIM115
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    waiting_for: dict[object, object] = {}
    for line in sys.stdin:
        log.write(line)
        log.flush()
        message = json.loads(line)
        method = message.get("method")
        request_id = message.get("id")
        if method is None:
            if request_id in waiting_for:
                answer = message.get("result", message.get("error"))
                result(waiting_for.pop(request_id), json.dumps(answer))
            continue
        params = message.get("params") or {}
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "recorder",
                                                              "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            name = params.get("name")
            if name in ("echo", "wipe"):
                result(request_id, json.dumps({"meta": params.get("_meta"),
                                               "arguments": params.get("arguments")}))
            elif name == "slow":
                pass  # never answers; the client cancels it
            elif name == "crash":
                os._exit(3)
            elif name == "pid":
                result(request_id, str(os.getpid()))
            elif name == "big":
                result(request_id, "x" * (int(params["arguments"]["size"])))
            elif name == "ask":
                token = (params.get("_meta") or {}).get("progressToken")
                if token is not None:
                    send({"jsonrpc": "2.0", "method": "notifications/progress",
                          "params": {"progressToken": token, "progress": 1, "total": 2}})
                send({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "info", "data": "asking the client"}})
                kind = params["arguments"]["kind"]
                server_request = {
                    "sampling": ("sampling/createMessage", {
                        "messages": [{"role": "user",
                                      "content": {"type": "text", "text": "hi"}}],
                        "maxTokens": 5}),
                    "roots": ("roots/list", {}),
                    "elicitation": ("elicitation/create", {
                        "message": "name?", "requestedSchema": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}}}}),
                }[kind]
                server_id = f"srv-{request_id}"
                waiting_for[server_id] = request_id
                send({"jsonrpc": "2.0", "id": server_id, "method": server_request[0],
                      "params": server_request[1]})
            else:
                result(request_id, f"unknown tool {name}", is_error=True)
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})
        elif request_id is not None:
            send({"jsonrpc": "2.0", "id": request_id,
                  "error": {"code": -32601, "message": f"Method not found: {method}"}})


if __name__ == "__main__":
    main()
