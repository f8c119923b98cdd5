"""What the server reads is what the client sent, what the guard hashed, and nothing breaks it.

Forwarded requests keep every byte except the ``_meta`` entries the proxy sets;
integers beyond 64 bits keep every digit in the hash and on the wire; nesting
that the proxy cannot judge is answered with an error naming why, either way,
and the session goes on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from spanguard.guardrails import approve
from spanguard.hashing import payload_hash
from tests.mcp.proxyproc import RECORDER, SPEC, RawProxy, executed, stored_spans

INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
_META = re.compile(rb'"_meta":\{"traceparent":"00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]"\}')


def policy(tmp_path: Path, body: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(body)
    return str(path)


def raw_lines(log: Path) -> list[bytes]:
    return log.read_bytes().splitlines()


async def test_a_forwarded_request_keeps_every_byte_but_the_trace_context(
        tmp_path: Path) -> None:
    log = tmp_path / "log"
    proxy = await RawProxy.start([*RECORDER, str(log)])
    await proxy.initialize()
    # Key order, spacing, escapes, float spellings and integers past 2^64 as written.
    sent = (b'{ "params" : {"name":"echo", "arguments":{"z":1.50,"a":1e2,"n":'
            b'184467440737095516170001,"s":"caf\\u00e9 \\"q\\"","deep":[[[{}]]]}}, '
            b'"method":"tools/call","id":"k1","jsonrpc":"2.0" }')
    await proxy.send_raw(sent + b"\n")
    assert (await proxy.response("k1"))["result"]["isError"] is False
    with_meta = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":' \
                b'{"progressToken":7,"traceparent":"00-bogus","x-vendor":{"k":[1,2]}},' \
                b'"name":"echo","arguments":{}}}'
    await proxy.send_raw(with_meta + b"\n")
    await proxy.response(2)
    await proxy.send_raw(b'{"jsonrpc":"2.0","id":3,"method":"ping"}\n')
    await proxy.response(3)
    await proxy.close()
    lines = raw_lines(log)
    forwarded = next(line for line in lines if b'"k1"' in line)
    assert _META.sub(b"", forwarded, count=1).replace(b"{,", b"{") == sent
    kept = next(line for line in lines if b'"id":2' in line)
    assert b'"progressToken":7' in kept and b'"x-vendor":{"k":[1,2]}' in kept
    assert b"00-bogus" not in kept and kept.count(b"traceparent") == 1
    ping = next(line for line in lines if b'"id":3' in line)
    assert ping.startswith(b'{"jsonrpc":"2.0","id":3,"method":"ping","params":{"_meta":')


async def test_integers_beyond_64_bits_are_hashed_and_forwarded_exactly(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "executed.log"
    proxy = await RawProxy.start([*SPEC, str(log)], "--policy",
                                 policy(tmp_path, '[holds]\ntools = ["wipe"]\n'),
                                 "--identity", "alice", "--name", "ledger")
    await proxy.initialize()
    approved_amount, other_amount = 2**64 + 1, 2**64 + 2  # one float, two amounts
    held = await proxy.call(1, "wipe", amount=approved_amount)
    hold = held["result"]["structuredContent"]["spanguard_hold"]
    assert hold["payload_hash"] == payload_hash(
        {"arguments": {"amount": approved_amount}, "server": "ledger"})
    approve(hold["hold_id"], "bob")
    other = await proxy.call(2, "wipe", amount=other_amount)
    assert other["result"]["structuredContent"]["spanguard_hold"]["hold_id"] != \
        hold["hold_id"]
    ran = await proxy.call(3, "wipe", amount=approved_amount)
    assert ran["result"]["isError"] is False
    assert await proxy.close() == 0
    assert [e["arguments"] for e in executed(log)] == [{"amount": approved_amount}]
    span = next(s for s in stored_spans(spanguard_home)
                if s.attributes.get("jsonrpc.request.id") == "3")
    assert span.attributes["spanguard.tool.arguments_hash"] == \
        payload_hash({"amount": approved_amount})


def nested_request(request_id: int, method: str, depth: int) -> bytes:
    """``depth`` levels of arrays in ``params``: 300 levels take about 600 bytes."""
    params = b'{"name":"echo","arguments":{"a":' + b"[" * depth + b"]" * depth + b"}}"
    return b'{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}' % (
        request_id, method.encode(), params)


async def test_a_request_nested_300_levels_deep_is_refused_and_the_session_goes_on(
        tmp_path: Path) -> None:
    log = tmp_path / "executed.log"
    proxy = await RawProxy.start([*SPEC, str(log)])
    await proxy.initialize()
    frame = nested_request(1, "tools/call", 297)
    assert len(frame) <= 700
    for n, method in enumerate(("tools/call", "ping", "resources/read"), start=1):
        await proxy.send_raw(nested_request(n, method, 297) + b"\n")
        refused = await proxy.response(n)
        assert refused["error"]["code"] == INVALID_REQUEST
        assert "nested more than 128 levels deep" in refused["error"]["message"]
    notification = b'{"jsonrpc":"2.0","method":"notifications/x","params":' \
                   + b"[" * 300 + b"]" * 300 + b"}"
    await proxy.send_raw(notification + b"\n")
    within = await proxy.call(4, "echo", a=json.loads("[" * 100 + "]" * 100))
    assert within["result"]["isError"] is False
    assert await proxy.close() == 0
    assert [e["id"] for e in executed(log)] == [4]


async def test_a_request_nested_past_the_parsers_limit_is_answered_with_its_id(
        tmp_path: Path) -> None:
    log = tmp_path / "executed.log"
    proxy = await RawProxy.start([*SPEC, str(log)])
    await proxy.initialize()
    await proxy.send_raw(nested_request(1, "tools/call", 5000) + b"\n")
    assert "nested more than 128" in (await proxy.response(1))["error"]["message"]
    # The TypeScript SDK writes the id last.
    last = b'{"jsonrpc":"2.0","method":"ping","params":{"a":' + b"[" * 5000 + b"]" * 5000 \
        + b'},"id":"ts"}'
    await proxy.send_raw(last + b"\n")
    assert (await proxy.response("ts"))["error"]["code"] == INVALID_REQUEST
    assert (await proxy.request(2, "ping"))["result"] == {}
    assert await proxy.close() == 0
    assert executed(log) == []


async def test_a_deep_result_of_a_verified_tool_gets_an_error_naming_the_reason(
        tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "executed.log"
    verify = ('[verify.nest]\ncall = "read"\narguments = { key = "{key}" }\n'
              'expect_contains = "{key}"\n')
    proxy = await RawProxy.start([*SPEC, str(log)], "--policy", policy(tmp_path, verify))
    await proxy.initialize()
    for n, depth in enumerate((300, 3000), start=1):
        answer = await proxy.call(n, "nest", depth=depth, key="k")
        assert answer["error"]["code"] == INTERNAL_ERROR
        assert "tools/call 'nest'" in answer["error"]["message"]
        assert "nested more than 128 levels deep" in answer["error"]["message"]
        assert "run" in answer["error"]["message"]  # the client is told it may have run
    shallow = await proxy.call(3, "nest", depth=3, key="k")
    assert shallow["result"]["_meta"]["spanguard/guardrail"]["verification"]["status"] == \
        "verified"
    assert await proxy.close() == 0
    spans = {s.attributes.get("jsonrpc.request.id"): s for s in stored_spans(spanguard_home)}
    assert spans["1"].status == "ERROR"
    assert spans["1"].attributes["error.type"] == "invalid_response"


async def test_without_a_policy_a_deep_result_passes_untouched_unless_unreadable(
        tmp_path: Path) -> None:
    log = tmp_path / "executed.log"
    proxy = await RawProxy.start([*SPEC, str(log)])
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "nest", "arguments": {"depth": 300}}})
    line = await proxy.recv_line()
    assert line.count(b'{"down": ') == 300  # the server's bytes, as it wrote them
    unreadable = await proxy.call(2, "nest", depth=3000)
    assert unreadable["error"]["code"] == INTERNAL_ERROR
    assert "could not be read (nested more than 128 levels deep" in \
        unreadable["error"]["message"]
    assert (await proxy.request(3, "ping"))["result"] == {}
    assert await proxy.close() == 0


async def test_answers_batched_by_the_server_are_judged_one_by_one(tmp_path: Path) -> None:
    log = tmp_path / "executed.log"
    verify = '[verify.nest]\ncall = "read"\narguments = { key = "{key}" }\n' \
             'expect_contains = "{key}"\n'
    proxy = await RawProxy.start([*SPEC, str(log), "--batch-answers"],
                                 "--policy", policy(tmp_path, verify))
    await proxy.initialize()
    answer = await proxy.call(1, "nest", depth=2, key="k")
    assert answer["result"]["_meta"]["spanguard/guardrail"]["verification"]["status"] == \
        "verified"
    assert (await proxy.request(2, "ping"))["result"] == {}
    assert await proxy.close() == 0


async def test_a_second_answer_to_one_request_never_reaches_the_client(
        tmp_path: Path) -> None:
    log = tmp_path / "executed.log"
    proxy = await RawProxy.start([*SPEC, str(log)])
    await proxy.initialize()
    first = await proxy.call(1, "twice")
    assert first["result"]["content"][0]["text"] == "first"
    await proxy.send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    # The server wrote its second answer before the ping's; the ping's comes next.
    assert await proxy.recv() == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert await proxy.close() == 0
