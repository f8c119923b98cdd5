"""Every request shape that could run a tool passes the guard or is refused, never forwarded.

The upstream is ``servers/spec_server.py``: a full JSON-RPC 2.0 server that
answers batches, executes notifications and reads leniently (first duplicate
key wins, ``Tools/Call`` is a tool call), so anything the proxy let through
would run and be logged. The policy holds ``wipe``; nobody approves it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.mcp.proxyproc import SERVERS, SPEC, RawProxy, executed

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HOLD_WIPE = '[holds]\ntools = ["wipe"]\n'


async def gateway(tmp_path: Path, *extra: str, policy: str = HOLD_WIPE,
                  server: list[str] | None = None) -> tuple[RawProxy, Path]:
    log = tmp_path / "executed.log"
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy)
    proxy = await RawProxy.start(server or [*SPEC, str(log)], "--policy", str(policy_file),
                                 "--identity", "alice", *extra)
    await proxy.initialize()
    return proxy, log


def wipe(request_id: object = None, **extra: object) -> dict[str, object]:
    message: dict[str, object] = {"jsonrpc": "2.0", "method": "tools/call",
                                  "params": {"name": "wipe", "arguments": {"db": "prod"}}}
    if request_id is not None:
        message["id"] = request_id
    message.update(extra)
    return message


async def still_serving(proxy: RawProxy, request_id: object) -> None:
    """The session goes on: a ping is answered, and a held call is still held."""
    assert (await proxy.request(request_id, "ping"))["result"] == {}
    held = await proxy.call(f"{request_id}-held", "wipe", db="prod")
    assert held["result"]["structuredContent"]["spanguard_hold"]["status"] == "held"


async def test_a_batch_is_refused_with_one_error_per_request_and_nothing_in_it_runs(
        tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    batch = [wipe(1),
             {"jsonrpc": "2.0", "id": "b", "method": "tools/call",
              "params": {"name": "echo", "arguments": {}}},
             wipe(),  # a notification: no answer
             {"jsonrpc": "2.0", "id": "srv-1", "result": {}},  # a response: no answer
             42]
    await proxy.send_raw(json.dumps(batch).encode() + b"\n")
    answer = await proxy.recv()
    assert isinstance(answer, list)
    assert [(a["id"], a["error"]["code"]) for a in answer] == [
        (1, INVALID_REQUEST), ("b", INVALID_REQUEST), (None, INVALID_REQUEST)]
    assert "batches are not accepted" in answer[0]["error"]["message"]
    await still_serving(proxy, 2)
    assert await proxy.close() == 0
    assert executed(log) == []


async def test_an_empty_batch_gets_one_invalid_request_error(tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    await proxy.send_raw(b"[]\n")
    answer = await proxy.recv()
    assert answer["id"] is None and answer["error"]["code"] == INVALID_REQUEST
    await still_serving(proxy, 1)
    assert await proxy.close() == 0
    assert executed(log) == []


async def test_a_batch_sent_to_an_sdk_based_server_is_answered(tmp_path: Path) -> None:
    sdk_server = [sys.executable, str(SERVERS / "parity_server.py")]
    proxy, _ = await gateway(tmp_path, server=sdk_server, policy="")
    await proxy.send_raw(json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "echo", "arguments": {"text": "hi"}}}]).encode() + b"\n")
    answer = await proxy.recv()
    assert sorted(a["id"] for a in answer) == [1, 2]
    assert {a["error"]["code"] for a in answer} == {INVALID_REQUEST}
    echoed = await proxy.call(3, "echo", text="still here")
    assert echoed["result"]["content"][0]["text"] == "still here"
    await proxy.close()


async def test_a_tools_call_without_an_id_is_never_forwarded(tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    await proxy.send(wipe())
    notification = wipe()
    notification["params"] = {"name": "echo", "arguments": {"q": 1}}
    await proxy.send(notification)
    await still_serving(proxy, 1)
    assert await proxy.close() == 0
    assert executed(log) == []


LOOK_ALIKES = ["Tools/Call", "tools/call ", "tools.call", "tools_call", "\uff54ools/call",
               "tools/\u200bcall", "TOOLS/CALL"]


async def test_a_method_spelled_like_tools_call_is_refused(tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    for n, method in enumerate(LOOK_ALIKES):
        refused = await proxy.request(n, method, {"name": "wipe", "arguments": {"db": "prod"}})
        assert refused["error"]["code"] == METHOD_NOT_FOUND, method
        assert "is not tools/call" in refused["error"]["message"]
        await proxy.send({"jsonrpc": "2.0", "method": method,
                          "params": {"name": "wipe", "arguments": {}}})
    await still_serving(proxy, "last")
    assert await proxy.close() == 0
    assert executed(log) == []


DUPLICATES = {
    # The guard (last key wins) would see ping; the server (first wins) runs wipe.
    "method": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping",'
              b'"params":{"name":"wipe","arguments":{}}}',
    # The guard would judge echo; the server runs wipe.
    "name": b'{"jsonrpc":"2.0","id":2,"method":"tools/call",'
            b'"params":{"name":"wipe","name":"echo","arguments":{}}}',
    # The guard would hash one payload; the server runs the other.
    "argument": b'{"jsonrpc":"2.0","id":3,"method":"tools/call",'
                b'"params":{"name":"echo","arguments":{"db":"prod","db":"test"}}}',
    "nested-and-params": b'{"jsonrpc":"2.0","id":4,"method":"tools/call",'
                         b'"params":{"name":"echo","arguments":{"a":{"x":1,"x":2}}},'
                         b'"params":{}}',
}


async def test_a_frame_with_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    for n, (case, frame) in enumerate(DUPLICATES.items(), start=1):
        await proxy.send_raw(frame + b"\n")
        refused = await proxy.response(n)
        assert refused["error"]["code"] == INVALID_REQUEST, case
        assert "duplicate key" in refused["error"]["message"]
    await still_serving(proxy, "last")
    assert await proxy.close() == 0
    assert executed(log) == []


async def test_non_object_arguments_get_invalid_params_before_the_upstream(
        tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    cases = [(["prod-db", "--all"], "an array"), ("prod-db --all", "a string"),
             (7, "a number"), (True, "a boolean")]
    for n, (arguments, kind) in enumerate(cases):
        refused = await proxy.request(n, "tools/call", {"name": "wipe", "arguments": arguments})
        assert refused["error"] == {
            "code": INVALID_PARAMS,
            "message": f"Invalid params: arguments of 'wipe' must be an object, got {kind}"}
    for bad in ({"arguments": {}}, {"name": ["wipe"], "arguments": {}}):
        answer = await proxy.request(f"name-{len(bad)}", "tools/call", bad)
        assert answer["error"]["code"] == INVALID_PARAMS
    assert (await proxy.request("list", "tools/call", ["wipe", {}]))["error"]["code"] == \
        INVALID_PARAMS
    await still_serving(proxy, "last")
    assert await proxy.close() == 0
    assert executed(log) == []


async def test_absent_or_null_arguments_are_the_empty_object_held_as_such(
        tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    absent = await proxy.request(1, "tools/call", {"name": "wipe"})
    null = await proxy.request(2, "tools/call", {"name": "wipe", "arguments": None})
    hold = absent["result"]["structuredContent"]["spanguard_hold"]
    assert null["result"]["structuredContent"]["spanguard_hold"]["hold_id"] == hold["hold_id"]
    assert await proxy.close() == 0
    assert executed(log) == []


async def test_ids_are_strings_or_64_bit_integers_and_unique_in_flight(
        tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    big = 2**64 + 1
    await proxy.send_raw(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % big)
    out_of_range = await proxy.recv()
    assert out_of_range["id"] == big  # echoed with every digit, so the client can match it
    assert "outside the 64-bit integer range" in out_of_range["error"]["message"]
    for odd in (1.5, True, None, {"a": 1}, [1]):
        await proxy.send({"jsonrpc": "2.0", "id": odd, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {}}})
        invalid = await proxy.recv()
        assert invalid["id"] is None and invalid["error"]["code"] == INVALID_REQUEST
    await proxy.send({"jsonrpc": "2.0", "id": "s", "method": "tools/call",
                      "params": {"name": "stall", "arguments": {}}})
    await asyncio.sleep(0.2)  # let it reach the server before the duplicate id
    reused = await proxy.request("s", "ping")
    assert reused["error"]["code"] == INVALID_REQUEST
    assert "already used by a request in flight" in reused["error"]["message"]
    await still_serving(proxy, 1)
    assert await proxy.close() == 0
    assert [e["tool"] for e in executed(log)] == ["stall"]


async def test_a_request_that_is_also_a_response_is_refused(tmp_path: Path) -> None:
    proxy, log = await gateway(tmp_path)
    await proxy.send({**wipe(1), "result": {}})
    refused = await proxy.recv()
    assert refused["id"] == 1 and refused["error"]["code"] == INVALID_REQUEST
    await still_serving(proxy, 2)
    assert await proxy.close() == 0
    assert executed(log) == []
