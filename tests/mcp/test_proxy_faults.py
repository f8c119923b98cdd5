"""Faults and bad input: the proxy answers with JSON-RPC errors, never hangs or leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mcp.proxyproc import RECORDER, RawProxy, pid_alive, recorded, stored_spans

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
CONNECTION_CLOSED = -32000

# The CLI runs on uvloop when installed; the stdlib loop is the fallback.
both_loops = pytest.mark.parametrize("loop", ["auto", "asyncio"])


@both_loops
async def test_upstream_crash_fails_every_pending_request_and_the_proxy_exits(
        tmp_path: Path, spanguard_home: Path, loop: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANGUARD_MCP_LOOP", loop)
    proxy = await RawProxy.start([*RECORDER, str(tmp_path / "log")])
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "slow", "arguments": {}}})
    await proxy.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "crash", "arguments": {}}})
    errors = {}
    for _ in range(2):
        message = await proxy.recv()
        errors[message["id"]] = message["error"]
    assert set(errors) == {1, 2}
    for error in errors.values():
        assert error["code"] == CONNECTION_CLOSED
        assert "exited with code 3" in error["message"]
        assert "recorder.py" in error["message"]
    assert "tools/call" in errors[2]["message"]
    assert await proxy.exited() == 1
    spans = {s.attributes.get("jsonrpc.request.id"): s for s in stored_spans(spanguard_home)}
    assert spans["2"].status == "ERROR"
    assert spans["2"].attributes["error.type"] == "upstream_exit"


async def test_restart_on_crash_replays_initialize_and_serves_again(tmp_path: Path) -> None:
    log = tmp_path / "log"
    proxy = await RawProxy.start([*RECORDER, str(log)], "--restart-on-crash")
    await proxy.initialize()
    first_pid = int((await proxy.call(1, "pid"))["result"]["content"][0]["text"])
    crashed = await proxy.call(2, "crash")
    assert crashed["error"]["code"] == CONNECTION_CLOSED
    second_pid = int((await proxy.call(3, "pid"))["result"]["content"][0]["text"])
    assert second_pid != first_pid
    assert not pid_alive(first_pid)
    methods = [m.get("method") for m in recorded(log)]
    # The restarted server got the client's handshake again before the next call.
    after_crash = methods[methods.index("tools/call", methods.index("tools/call") + 1) + 1:]
    assert after_crash[:3] == ["initialize", "notifications/initialized", "tools/call"]
    replayed = [m for m in recorded(log) if m.get("method") == "initialize"][1]
    assert replayed["params"]["clientInfo"] == {"name": "raw", "version": "1"}
    assert await proxy.close() == 0
    assert not pid_alive(second_pid)


async def test_malformed_json_gets_a_parse_error_and_the_pump_goes_on(tmp_path: Path) -> None:
    proxy = await RawProxy.start([*RECORDER, str(tmp_path / "log")])
    await proxy.initialize()
    await proxy.send_raw(b'{"jsonrpc": "2.0", "id": 5, "method": \n')
    error = await proxy.recv()
    assert error["id"] is None
    assert error["error"]["code"] == PARSE_ERROR
    await proxy.send_raw(b"42\n")
    assert (await proxy.recv())["error"]["code"] == INVALID_REQUEST
    assert (await proxy.request(6, "ping"))["result"] == {}
    assert await proxy.close() == 0


async def test_unknown_method_error_comes_from_the_upstream(tmp_path: Path) -> None:
    proxy = await RawProxy.start([*RECORDER, str(tmp_path / "log")])
    await proxy.initialize()
    response = await proxy.request(7, "no/such/method", {})
    assert response["error"] == {"code": -32601, "message": "Method not found: no/such/method"}
    assert "no/such/method" in [m.get("method") for m in recorded(tmp_path / "log")]
    await proxy.close()


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_oversized_messages_are_refused_with_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "log"
    proxy = await RawProxy.start([*RECORDER, str(log)])
    await proxy.initialize()
    await proxy.call(1, "echo")
    baseline_kb = _peak_rss_kb(proxy.process.pid)
    payload = "y" * (48 * 1024 * 1024)
    await proxy.send_raw(b'{"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": '
                         b'{"name": "echo", "arguments": {"data": "' + payload.encode()
                         + b'"}}}\n')
    refused = await proxy.response(8)
    assert refused["error"]["code"] == INVALID_REQUEST
    assert "exceeds the proxy's limit of 10485760 bytes" in refused["error"]["message"]
    # 48 MB went through the proxy; its peak memory grew by far less than that.
    assert _peak_rss_kb(proxy.process.pid) - baseline_kb < 24 * 1024
    assert not any(m.get("id") == 8 for m in recorded(log))
    # An oversized answer from the server fails that request, and only that one.
    too_big = await proxy.call(9, "big", size=11 * 1024 * 1024)
    assert too_big["error"]["code"] == INTERNAL_ERROR  # the request was fine
    assert "from the upstream" in too_big["error"]["message"]
    assert (await proxy.call(10, "echo"))["result"]["isError"] is False
    assert await proxy.close() == 0


async def test_bad_traceparent_starts_a_fresh_trace(tmp_path: Path,
                                                    spanguard_home: Path) -> None:
    log = tmp_path / "log"
    proxy = await RawProxy.start([*RECORDER, str(log)])
    await proxy.initialize()
    bogus = "00-zzzz-not-a-trace-01"
    response = await proxy.request(11, "tools/call", {
        "name": "echo", "arguments": {}, "_meta": {"traceparent": bogus}})
    assert response["result"]["isError"] is False
    await proxy.close()
    span = next(s for s in stored_spans(spanguard_home)
                if s.attributes.get("jsonrpc.request.id") == "11")
    assert span.parent_span_id is None
    forwarded = next(m for m in recorded(log) if m.get("id") == 11)
    # The upstream got the proxy's own, valid context in place of the bogus one.
    traceparent = forwarded["params"]["_meta"]["traceparent"]
    assert traceparent.startswith(f"00-{span.trace_id}-{span.span_id}-")


@both_loops
async def test_client_disconnect_terminates_the_upstream(
        tmp_path: Path, loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANGUARD_MCP_LOOP", loop)
    proxy = await RawProxy.start([*RECORDER, str(tmp_path / "log")])
    await proxy.initialize()
    upstream_pid = int((await proxy.call(1, "pid"))["result"]["content"][0]["text"])
    assert pid_alive(upstream_pid)
    assert await proxy.close() == 0
    assert not pid_alive(upstream_pid)


async def test_an_upstream_that_ignores_eof_and_sigterm_is_killed(tmp_path: Path) -> None:
    proxy = await RawProxy.start([*RECORDER, str(tmp_path / "log"), "--ignore-term"])
    await proxy.initialize()
    upstream_pid = int((await proxy.call(1, "pid"))["result"]["content"][0]["text"])
    # A call left pending keeps the recorder reading, so EOF alone does not end it.
    await proxy.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "slow", "arguments": {}}})
    assert await proxy.close() == 0
    assert not pid_alive(upstream_pid)


async def test_sigterm_to_the_proxy_stops_the_upstream_too(tmp_path: Path) -> None:
    proxy = await RawProxy.start([*RECORDER, str(tmp_path / "log")])
    await proxy.initialize()
    upstream_pid = int((await proxy.call(1, "pid"))["result"]["content"][0]["text"])
    proxy.process.terminate()
    assert await proxy.exited() == 0
    assert not pid_alive(upstream_pid)


async def test_cancellation_reaches_the_upstream(tmp_path: Path, spanguard_home: Path) -> None:
    log = tmp_path / "log"
    proxy = await RawProxy.start([*RECORDER, str(log)])
    await proxy.initialize()
    await proxy.send({"jsonrpc": "2.0", "id": 12, "method": "tools/call",
                      "params": {"name": "slow", "arguments": {}}})
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": 12, "reason": "user pressed stop"}}
    await proxy.send(cancel)
    assert (await proxy.request(13, "ping"))["result"] == {}
    assert cancel in recorded(log)
    await proxy.close()
    span = next(s for s in stored_spans(spanguard_home)
                if s.attributes.get("jsonrpc.request.id") == "12")
    assert span.attributes["spanguard.mcp.proxy_outcome"] == "cancelled"
    assert span.status != "ERROR"


async def test_server_to_client_requests_and_notifications_pass_both_ways(
        tmp_path: Path) -> None:
    log = tmp_path / "log"
    proxy = await RawProxy.start([*RECORDER, str(log)])
    await proxy.initialize()
    for n, kind in enumerate(("sampling", "roots", "elicitation")):
        request_id = 20 + n
        await proxy.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                          "params": {"name": "ask", "arguments": {"kind": kind},
                                     "_meta": {"progressToken": f"p{n}"}}})
        progress = await proxy.recv()
        assert progress["method"] == "notifications/progress"
        assert progress["params"]["progressToken"] == f"p{n}"
        assert (await proxy.recv())["method"] == "notifications/message"
        server_request = await proxy.recv()
        assert server_request["id"] == f"srv-{request_id}"
        assert server_request["method"].split("/")[0] in ("sampling", "roots", "elicitation")
        answer = {"jsonrpc": "2.0", "id": server_request["id"], "result": {"kind": kind}}
        await proxy.send(answer)
        done = await proxy.response(request_id)
        assert done["result"]["content"][0]["text"] == '{"kind": "' + kind + '"}'
        assert answer in recorded(log)
    await proxy.close()


async def test_many_concurrent_requests_each_get_their_own_answer(tmp_path: Path) -> None:
    proxy = await RawProxy.start([*RECORDER, str(tmp_path / "log")])
    await proxy.initialize()
    for n in range(50):
        await proxy.send({"jsonrpc": "2.0", "id": f"c{n}", "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"n": n}}})
    seen = set()
    for _ in range(50):
        message = await proxy.recv()
        n = int(message["id"][1:])
        assert f'"arguments": {{"n": {n}}}' in message["result"]["content"][0]["text"]
        seen.add(n)
    assert seen == set(range(50))
    await proxy.close()
