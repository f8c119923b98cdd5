"""The proxy's byte-level reading and editing of frames, on generated JSON.

The splice must change nothing but ``params._meta``; the id reader must never
name a wrong id, even in a frame cut anywhere; the depth scan must agree with
the real depth; the exact codec must round-trip what it accepted; and
admission must sort any bytes at all without raising.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanguard.mcp_bridge import _proxy_codec as codec
from spanguard.mcp_bridge._proxy_admission import Refusal, admit
from spanguard.mcp_bridge._proxy_splice import (
    array_elements,
    deeper_than,
    inject_meta,
    tail_id,
    top_level_id,
)

leaf = (st.none() | st.booleans() | st.integers(-(2**80), 2**80)
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12)
ids = st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10)
TRACE = {"traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}


def spaced(message: Any, seed: int) -> bytes:
    """``message`` as JSON with random (valid) whitespace between tokens."""
    text = json.dumps(message, ensure_ascii=seed % 2 == 0)
    rng = random.Random(seed)
    out = []
    in_string = escaped = False
    for char in text:
        out.append(char)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        if not in_string and char in ",:[{" and rng.random() < 0.3:
            out.append(rng.choice([" ", "\t", "\r\n", "  "]))
    return "".join(out).replace("\n", " ").encode()


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": draw(ids), "method": "tools/call"}
    params = draw(st.none() | st.dictionaries(st.text(max_size=5), value, max_size=3)
                  | st.lists(value, max_size=2))
    if isinstance(params, dict):
        meta = draw(st.none() | st.dictionaries(st.text(max_size=5), value, max_size=3)
                    | st.just({"traceparent": "00-bogus", "progressToken": 3}) | leaf)
        if meta is not None:
            params["_meta"] = meta
    if params is not None:
        message["params"] = params
    order = draw(st.permutations(list(message)))
    return {key: message[key] for key in order}


@settings(max_examples=300)
@given(requests(), st.integers(0, 1000))
def test_the_splice_sets_the_trace_context_and_changes_nothing_else(
        message: dict[str, Any], seed: int) -> None:
    frame = spaced(message, seed)
    spliced = inject_meta(frame, TRACE, codec.loads(frame))
    expected = json.loads(frame)
    params = expected.setdefault("params", {})
    if isinstance(params, dict):
        meta = params.setdefault("_meta", {})
        if isinstance(meta, dict):
            meta.update(TRACE)
            assert json.loads(spliced)["params"]["_meta"]["traceparent"] == \
                TRACE["traceparent"]
    else:
        assert spliced == frame  # params that is not an object: nothing to add to
    assert codec.loads(spliced) == expected  # every other value exactly as it was
    assert spliced.startswith(frame[:frame.find(b'"params"')]) or b'"params"' not in frame


@settings(max_examples=300)
@given(ids, value, st.integers(0, 1000), st.booleans())
def test_the_id_read_from_any_cut_is_the_id_or_nothing(
        rid: Any, params: Any, seed: int, id_last: bool) -> None:
    fields = {"jsonrpc": "2.0", "method": "m", "params": params}
    message = {**fields, "id": rid} if id_last else {"id": rid, **fields}
    frame = spaced(message, seed)
    assert top_level_id(frame) == rid
    rng = random.Random(seed)
    for cut in sorted({rng.randrange(len(frame)) for _ in range(20)}):
        assert top_level_id(frame[:cut]) in (rid, None)
        assert tail_id(frame[cut:]) in (rid, None)


def depth_of(item: Any) -> int:
    if isinstance(item, dict):
        return 1 + max((depth_of(v) for v in item.values()), default=0)
    if isinstance(item, list):
        return 1 + max((depth_of(v) for v in item), default=0)
    return 0


@settings(max_examples=300)
@given(value, st.integers(0, 6))
def test_the_depth_scan_agrees_with_the_parsed_depth(item: Any, limit: int) -> None:
    frame = json.dumps(item).encode()
    assert deeper_than(frame, limit) == (depth_of(item) > limit)
    assert codec.nesting_exceeds(frame, json.loads(frame), max(limit, 1)) == \
        (depth_of(item) > max(limit, 1))


@settings(max_examples=300)
@given(value)
def test_the_exact_codec_round_trips_what_it_accepts(item: Any) -> None:
    frame = codec.dumps(item)[:-1]
    codec.validate(frame)  # strict JSON
    assert codec.loads(frame) == item  # integers past 2^64 included
    assert codec.loads(json.dumps([item, item]).encode()) == [item, item]


@settings(max_examples=200)
@given(st.lists(value, max_size=5), st.integers(0, 1000))
def test_batch_elements_are_cut_out_byte_for_byte(items: list[Any], seed: int) -> None:
    frame = spaced(items, seed)
    elements = array_elements(frame)
    assert [json.loads(element) for element in elements] == json.loads(frame)
    assert all(element in frame for element in elements)  # byte for byte


def test_duplicate_keys_are_found_at_any_depth() -> None:
    with pytest.raises(codec.DuplicateKey, match="'x'"):
        codec.loads(b'{"a":[{"b":{"x":1,"x":1}}]}')
    with pytest.raises(codec.DuplicateKey):
        codec.loads(b'{"k":1,"\\u006b":2}')  # the same key, spelled differently


@settings(max_examples=500)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | value.map(lambda v: json.dumps(v).encode()))
def test_admission_sorts_any_bytes_without_raising(frame: bytes) -> None:
    admitted = admit(frame)
    if isinstance(admitted, Refusal):
        assert admitted.reason
