"""Generated JSON-RPC traffic against the real proxy, checked against what the server ran.

One ``spanguard mcp wrap`` process (a policy that holds ``wipe``, refuses a
third identical call and verifies ``nest`` by reading back) fronts
``servers/spec_server.py``, a server that would run anything reaching it:
batches, notifications, lenient duplicate keys, methods spelled like
``tools/call``. Hypothesis sends it frames of every kind: valid requests with
odd ids, notifications, batches, responses, cancellations, malformed bytes,
duplicate keys, nesting up to 3,000 levels, messages around the size cap. After
every exchange, and once more at the end:

- no held or refused tool ran: every tool the server logged was asked for by a
  single, well-formed ``tools/call`` with an id, and its answer was not a hold,
  a refusal or an admission error;
- every request with an id got exactly one answer (a cancelled one at most one),
  and no answer named an id nobody sent;
- the proxy is up and writes only valid JSON;
- memory is bounded: after a warm-up that fills the bounded buffers, 900 more
  rounds of a steady workload grow the proxy's resident memory by less than
  2 MiB, and its peak stays within a bound set by the size cap.

``SPANGUARD_FUZZ_EXAMPLES`` (default 600) sets the number of exchanges.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import strategies as st

from tests.mcp.proxyproc import SPANGUARD, SPEC

EXAMPLES = int(os.environ.get("SPANGUARD_FUZZ_EXAMPLES", "600"))
CAP = 256 * 1024  # --max-message-bytes: frames around it are cheap to generate
ANSWER_TIMEOUT = 10.0
POLICY = """
[holds]
tools = ["wipe"]
[tool_loop]
identical_calls = 8
[verify.nest]
call = "read"
arguments = { key = "{key}" }
expect_contains = "{key}"
"""
ADMISSION_ERRORS = {-32700, -32600, -32601, -32602}
TOOLS = ["echo", "wipe", "nest", "read", "twice", "no_such_tool"]
METHODS = ["tools/call", "ping", "tools/list", "resources/list", "initialize", "x/unknown",
           "Tools/Call", "tools/call ", "tools.call", "TOOLS/CALL", "\uff54ools/call"]
ID_SHAPES = ["int", "negative", "big63", "beyond64", "ascii", "unicode", "escaped",
             "empty", "float", "bool", "null", "object"]
PLAIN_ID_SHAPES = ["int", "negative", "big63", "ascii"]  # what a cut-off frame still shows


def make_id(shape: str, serial: int) -> Any:
    return {"int": serial, "negative": -serial, "big63": 2**62 + serial,
            "beyond64": 2**64 + serial, "ascii": f"id-{serial}",
            "unicode": f"\u00fc\u6f22-{serial}", "escaped": f'q"\\\n{serial}',
            "empty": "" if serial == 0 else f"\t{serial}", "float": serial + 0.5,
            "bool": True, "null": None, "object": {"n": serial}}[shape]


def echoed(value: Any) -> bool:
    """Whether the proxy echoes this id in its answer (else it answers with id null)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def forwardable(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)
                                      and -(2**63) <= value < 2**63)


@dataclass
class Sent:
    """What the model expects of one exchange."""

    frames: list[bytes] = field(default_factory=list)
    once: list[Any] = field(default_factory=list)  # ids answered exactly once
    at_most_once: list[Any] = field(default_factory=list)
    may_run: list[Any] = field(default_factory=list)  # ids of well-formed tools/call


Render = Callable[["Session", Sent], None]


class Session:
    """Ids unique over the whole run, so every answer is attributable."""

    def __init__(self) -> None:
        self.serial = 0
        self.sent_ids: list[Any] = []

    def next_id(self, shape: str) -> Any:
        self.serial += 1
        value = make_id(shape, self.serial)
        if echoed(value):
            self.sent_ids.append(value)
        return value


json_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                          max_leaves=8)


@st.composite
def tool_params(draw: st.DrawFn) -> tuple[Any, bool]:
    """``params`` of a tools/call, and whether it is well-formed (an object, a string
    name, object or absent arguments)."""
    tool = draw(st.sampled_from(TOOLS))
    shape = draw(st.just("object") | st.sampled_from(["object", "absent", "null", "list",
                                                      "string", "no-name", "params-list"]))
    if tool == "nest":
        arguments: Any = {"depth": draw(st.integers(0, 200)),
                          "key": draw(st.text(max_size=5))}
    else:
        arguments = draw(st.dictionaries(st.text(max_size=6), json_value, max_size=3))
    if shape == "params-list":
        return [tool, arguments], False
    params: dict[str, Any] = {"name": tool}
    if shape == "object":
        params["arguments"] = arguments
    elif shape == "null":
        params["arguments"] = None
    elif shape == "list":
        params["arguments"] = list(arguments.values())
    elif shape == "string":
        params["arguments"] = json.dumps(arguments)
    elif shape == "no-name":
        params = {"arguments": arguments}
    return params, shape in ("object", "absent", "null")


@st.composite
def request(draw: st.DrawFn) -> Render:
    method = draw(st.just("tools/call") | st.sampled_from(METHODS))
    shape = draw(st.sampled_from(ID_SHAPES))
    tool_like = "".join(c for c in method.casefold() if c.isalnum()) in ("toolscall",
                                                                          "\uff54oolscall")
    params, well_formed = draw(tool_params()) if tool_like \
        else (draw(st.none() | st.dictionaries(st.text(max_size=4), json_value, max_size=2)),
              False)
    key_order = draw(st.permutations(["jsonrpc", "id", "method", "params"]))

    def render(session: Session, sent: Sent) -> None:
        rid = session.next_id(shape)
        fields = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        message = {k: fields[k] for k in key_order if not (k == "params" and params is None)}
        sent.frames.append(json.dumps(message).encode())
        if echoed(rid):
            sent.once.append(rid)
        if method == "tools/call" and well_formed and forwardable(rid):
            sent.may_run.append(rid)
    return render


@st.composite
def notification(draw: st.DrawFn) -> Render:
    method = draw(st.sampled_from([*METHODS, "notifications/initialized"]))
    params, _ = draw(tool_params())

    def render(session: Session, sent: Sent) -> None:
        sent.frames.append(json.dumps({"jsonrpc": "2.0", "method": method,
                                       "params": params}).encode())
    return render


@st.composite
def cancellation(draw: st.DrawFn) -> Render:
    back = draw(st.integers(0, 5))

    def render(session: Session, sent: Sent) -> None:
        if not sent.once:
            return
        target = sent.once[-1 - back % len(sent.once)]
        sent.once.remove(target)
        sent.at_most_once.append(target)
        sent.frames.append(json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                       "params": {"requestId": target}}).encode())
    return render


@st.composite
def response(draw: st.DrawFn) -> Render:
    payload = draw(st.sampled_from([{"result": {}}, {"error": {"code": 1, "message": "x"}}]))

    def render(session: Session, sent: Sent) -> None:
        sent.frames.append(json.dumps({"jsonrpc": "2.0", "id": f"srv-{session.serial}",
                                       **payload}).encode())
    return render


@st.composite
def batch(draw: st.DrawFn) -> Render:
    members = draw(st.lists(st.sampled_from(["request", "notification", "response", "junk"]),
                            max_size=4))
    shapes = draw(st.lists(st.sampled_from(ID_SHAPES), min_size=4, max_size=4))
    tool = draw(st.sampled_from(TOOLS))

    def render(session: Session, sent: Sent) -> None:
        body: list[Any] = []
        for kind, shape in zip(members, shapes, strict=False):
            call = {"jsonrpc": "2.0", "method": "tools/call",
                    "params": {"name": tool, "arguments": {}}}
            if kind == "request":
                rid = session.next_id(shape)
                body.append({**call, "id": rid})
                if echoed(rid):
                    sent.once.append(rid)
            elif kind == "notification":
                body.append(call)
            elif kind == "response":
                body.append({"jsonrpc": "2.0", "id": "srv-x", "result": {}})
            else:
                body.append(7)
        sent.frames.append(json.dumps(body).encode())
    return render


@st.composite
def duplicate_keys(draw: st.DrawFn) -> Render:
    where = draw(st.sampled_from(["method", "name", "arguments", "nested"]))
    shape = draw(st.sampled_from(PLAIN_ID_SHAPES))

    def render(session: Session, sent: Sent) -> None:
        rid = json.dumps(session.next_id(shape))
        params = {"method": '{"name":"wipe","arguments":{}}',
                  "name": '{"name":"wipe","name":"echo","arguments":{}}',
                  "arguments": '{"name":"echo","arguments":{"db":"a","db":"b"}}',
                  "nested": '{"name":"echo","arguments":{"a":[{"k":1,"k":2}]}}'}[where]
        method = '"method":"tools/call","method":"ping"' if where == "method" \
            else '"method":"tools/call"'
        sent.frames.append(f'{{"jsonrpc":"2.0","id":{rid},{method},"params":{params}}}'
                           .encode())
        sent.once.append(json.loads(rid))
    return render


@st.composite
def deep(draw: st.DrawFn) -> Render:
    depth = draw(st.sampled_from([129, 300, 1023, 1025, 3000]) | st.integers(100, 400))
    method = draw(st.sampled_from(["tools/call", "ping"]))
    id_last = draw(st.booleans())
    shape = draw(st.sampled_from([*PLAIN_ID_SHAPES, "beyond64"]))

    def render(session: Session, sent: Sent) -> None:
        rid = session.next_id(shape)
        nested = "[" * depth + "]" * depth
        params = f'{{"name":"echo","arguments":{{"a":{nested}}}}}'
        head = f'"jsonrpc":"2.0","method":"{method}","params":{params}'
        text = f'{{{head},"id":{json.dumps(rid)}}}' if id_last \
            else f'{{"id":{json.dumps(rid)},{head}}}'
        sent.frames.append(text.encode())
        sent.once.append(rid)
        if method == "tools/call" and depth + 3 <= 128:
            sent.may_run.append(rid)
    return render


@st.composite
def huge(draw: st.DrawFn) -> Render:
    size = draw(st.integers(CAP - 2048, CAP + 2048) | st.integers(CAP, 4 * CAP))
    id_last = draw(st.booleans())
    shape = draw(st.sampled_from(PLAIN_ID_SHAPES))

    def render(session: Session, sent: Sent) -> None:
        rid = session.next_id(shape)
        fields = {"jsonrpc": "2.0", "method": "tools/call",
                  "params": {"name": "echo", "arguments": {"blob": "x" * size}}}
        message = {**fields, "id": rid} if id_last else {"id": rid, **fields}
        sent.frames.append(json.dumps(message).encode())
        sent.once.append(rid)
        sent.may_run.append(rid)
    return render


MALFORMED = [b"{", b"nul", b"NaN", b'{"a":NaN}', b'"\\ud800"', b"\xef\xbb\xbf{}",
             b"\xff\xfe\xfd", b"[1,]", b"{'a':1}", b"1e400", b'{"jsonrpc":"2.0"} x',
             b"42", b'"just a string"', b"null", b"{}"]


@st.composite
def malformed(draw: st.DrawFn) -> Render:
    fixed = draw(st.sampled_from(MALFORMED))
    cut = draw(st.floats(0.05, 0.95))
    noise = draw(st.binary(max_size=40))
    kind = draw(st.sampled_from(["fixed", "cut", "noise"]))

    def render(session: Session, sent: Sent) -> None:
        if kind == "fixed":
            frame = fixed
        elif kind == "noise":
            frame = noise
        else:  # a cut-off request: the proxy may still read (and answer) its id
            rid = session.next_id("int")
            whole = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                "params": {"name": "wipe", "arguments": {"a": [[[1]]]}}})
            frame = whole.encode()[:max(1, int(len(whole) * cut))]
            sent.at_most_once.append(rid)
        sent.frames.append(frame.replace(b"\n", b" ").replace(b"\r", b" "))
    return render


# Half the frames are requests (most of them tools/call), the rest every other kind.
frame_kinds = st.one_of(request(), st.one_of(
    request(), notification(), cancellation(), response(), batch(), duplicate_keys(), deep(),
    huge(), malformed()))


class Harness:
    """The proxy subprocess, a reader thread, and the ledger of answers."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "executed.log"
        policy = tmp_path / "policy.toml"
        policy.write_text(POLICY)
        self.stderr = (tmp_path / "proxy.stderr").open("wb")
        env = {**os.environ, "SPANGUARD_HOME": str(tmp_path / "home")}
        self.process = subprocess.Popen(
            [*SPANGUARD, "mcp", "wrap", "--policy", str(policy), "--identity", "alice",
             "--name", "fuzz", "--max-message-bytes", str(CAP), "--upstream-timeout", "10",
             "--", *SPEC, str(self.log)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.answers: Counter[str] = Counter()
        self.by_id: dict[str, dict[str, Any]] = {}
        self.session = Session()
        self.once: list[Any] = []
        self.at_most_once: list[Any] = []
        self.may_run: set[str] = set()
        self.ran: list[dict[str, Any]] = []  # everything the server logged, in order
        self.unjudged: list[dict[str, Any]] = []  # ran, and its answer not seen yet
        self._log_offset = 0
        self.exchanges = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def _take_answers(self, timeout: float) -> bool:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return False
        message = json.loads(line)  # the proxy writes only valid JSON
        for answer in message if isinstance(message, list) else [message]:
            assert isinstance(answer, dict), line[:200]
            if "method" in answer or answer.get("id") is None:
                continue
            key = json.dumps(answer["id"])
            self.answers[key] += 1
            self.by_id[key] = answer
        return True

    def exchange(self, renders: list[Render]) -> None:
        sent = Sent()
        for render in renders:
            render(self.session, sent)
        self.exchanges += 1
        if currently_in_test_context():  # the frames, shown for a failing example
            note(repr([frame[:300] for frame in sent.frames]))
        sync = f"sync-{self.exchanges}"
        self.session.sent_ids.append(sync)
        sent.once.append(sync)
        self.send(b"".join(frame + b"\n" for frame in sent.frames)
                  + json.dumps({"jsonrpc": "2.0", "id": sync, "method": "ping"}).encode()
                  + b"\n")
        self.once += sent.once
        self.at_most_once += sent.at_most_once
        self.may_run |= {json.dumps(rid) for rid in sent.may_run}
        self.await_answers(sent.once)
        self.check()

    def await_answers(self, ids: list[Any]) -> None:
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not all(self.answers[json.dumps(rid)] for rid in ids):
            assert self.process.poll() is None, "the proxy exited"
            assert time.monotonic() < deadline, [
                rid for rid in ids if not self.answers[json.dumps(rid)]]
            self._take_answers(0.5)

    def drain(self) -> None:
        """Take every answer still in flight: quiet for a second after a last sync."""
        self.exchange([])
        while self._take_answers(1.0):
            pass

    def check(self) -> None:
        assert self.process.poll() is None, "the proxy exited"
        for rid in self.once:
            assert self.answers[json.dumps(rid)] == 1, ("answers", rid)
        for rid in self.at_most_once:
            assert self.answers[json.dumps(rid)] <= 1, ("answers", rid)
        known = {json.dumps(rid) for rid in self.session.sent_ids}
        assert set(self.answers) <= known, set(self.answers) - known
        for entry in self.executed():
            rid = entry["id"]
            if isinstance(rid, str) and rid.startswith("spanguard-proxy-"):
                assert entry["tool"] == "read", entry  # the verifier's read-back only
                continue
            assert entry["method"] == "tools/call" and not entry["batch"], entry
            assert entry["tool"] != "wipe", entry  # held, and nobody approves
            assert json.dumps(rid) in self.may_run, entry
            self.unjudged.append(entry)
        waiting = []
        for entry in self.unjudged:
            answer = self.by_id.get(json.dumps(entry["id"]))
            if answer is None:  # still in flight: checked at the next sync
                waiting.append(entry)
            else:
                assert not refused(answer), (entry, answer)
        self.unjudged = waiting

    def executed(self) -> list[dict[str, Any]]:
        """What the server logged since the last call (all of it is kept in ``ran``)."""
        if not self.log.exists():
            return []
        with self.log.open("rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        complete = data[:data.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        entries = [json.loads(line) for line in complete.splitlines()]
        self.ran += entries
        return entries

    def rss_kb(self, field_name: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field_name}")

    def stop(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=30)
        self.stderr.close()
        return code


def refused(answer: dict[str, Any]) -> bool:
    """A hold, a guard's refusal, or an admission error: the call must not have run."""
    error = answer.get("error")
    if isinstance(error, dict):
        return error.get("code") in ADMISSION_ERRORS
    structured = (answer.get("result") or {}).get("structuredContent") or {}
    return isinstance(structured, dict) and ("spanguard" in structured
                                             or "spanguard_hold" in structured)


STEADY = [
    b'{"jsonrpc":"2.0","id":"w%d","method":"tools/call","params":{"name":"wipe",'
    b'"arguments":{"n":1}}}',
    b'{"jsonrpc":"2.0","id":"e%d","method":"tools/call","params":{"name":"echo",'
    b'"arguments":{"n":%d}}}',
    b'[{"jsonrpc":"2.0","id":"b%d","method":"tools/call","params":{"name":"echo"}}]',
    b'{"jsonrpc":"2.0","id":"d%d","method":"ping","params":{"a":' + b"[" * 300
    + b"]" * 300 + b"}}",
    b'{"jsonrpc":"2.0","id":"n%d","method":"tools/call","params":{"name":"nest",'
    b'"arguments":{"depth":2,"key":"k%d"}}}',
    b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"wipe"}}',
]


def steady_round(harness: Harness, start: int, count: int) -> None:
    """The same mix of allowed, held, verified and refused requests, ``count`` times."""
    for n in range(start, start + count):
        frames = [template % ((n,) * template.count(b"%d")) for template in STEADY]
        ids = [f"{prefix}{n}" for prefix in ("w", "e", "b", "d", "n")]
        harness.once += ids
        harness.session.sent_ids += ids
        harness.may_run |= {json.dumps(f"e{n}"), json.dumps(f"n{n}")}
        harness.send(b"\n".join(frames) + b"\n")
        harness.await_answers(ids)
    harness.drain()


def test_the_proxy_keeps_its_invariants_under_generated_traffic(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    try:
        harness.exchange([])  # started and serving

        @settings(max_examples=EXAMPLES, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(st.lists(frame_kinds, min_size=1, max_size=6))
        def exchanges(renders: list[Render]) -> None:
            harness.exchange(renders)

        exchanges()
        harness.drain()
        harness.check()
        peak_kb = harness.rss_kb("VmHWM")

        # Warm up until the bounded buffers are full (the span exporter's queue of
        # 2,048 spans, SQLite's page caches), then two equal phases: a leak grows
        # the second as much as the first; a filling cache does not.
        steady_round(harness, 0, 1500)
        start_kb = harness.rss_kb()
        steady_round(harness, 1500, 900)
        middle_kb = harness.rss_kb()
        steady_round(harness, 2400, 900)
        end_kb = harness.rss_kb()
        harness.check()
        assert end_kb - middle_kb < 2 * 1024, (start_kb, middle_kb, end_kb)
        # At most a few frames at the cap are held at once, whatever was sent.
        assert peak_kb < start_kb + 64 * 1024, (peak_kb, start_kb)
        cancelled = {json.dumps(rid) for rid in harness.at_most_once}
        # Every tool that ran had its answer checked, unless it was cancelled (no answer).
        assert all(json.dumps(e["id"]) in cancelled for e in harness.unjudged)
        assert harness.ran, "the fuzzing never got a tool to run"
    finally:
        code = harness.stop()
    assert code == 0
