"""A raw stdio MCP server that crashes on its first ``tools/call``, for the retry tests.

Usage: flaky.py STATE_DIR. The first tools/call ever (no ``crashed`` marker in
STATE_DIR) writes the marker and exits with code 9 mid-call; later runs answer.
Every tools/call received is appended to STATE_DIR/calls, so a test can count
how often each tool really reached the server.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TOOLS = [
    {"name": "lookup", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": True}},
    {"name": "put", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": False, "idempotentHint": True}},
    {"name": "append", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": False, "idempotentHint": False}},
]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    state = Path(sys.argv[1])
    marker = state / "crashed"
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "flaky", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            with open(state / "calls", "a", encoding="utf-8") as calls:
                calls.write(params["name"] + "\n")
            if not marker.exists():
                marker.write_text("1")
                os._exit(9)
            send({"jsonrpc": "2.0", "id": request_id, "result": {
                "content": [{"type": "text", "text": f"{params['name']} done"}],
                "isError": False}})
        elif request_id is not None:
            send({"jsonrpc": "2.0", "id": request_id,
                  "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
