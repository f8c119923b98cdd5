"""Token estimates from text: the tokenizer when it is installed, the character estimate
when not, never a download, never 0."""

from __future__ import annotations

import base64
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken

from spanguard.guardrails import ModelCall, estimate
from spanguard.guardrails.estimate import (
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    character_estimate,
    estimate_tokens,
    input_estimate,
    text_tokens,
    tokenizer_in_use,
)

_TOOL = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "required": ["query"], "properties": {
        "query": {"type": "string", "description": "the query"}, "k": {"type": "integer"}}}}}
SAMPLES = {
    "prose": "The quarterly report shows revenue grew 12% while costs stayed flat. " * 20,
    "code": "def total(items):\n    return sum(i.price * i.qty for i in items if i.ok)\n" * 20,
    "json": '{"order_id": "ORD-123456", "items": [{"sku": "A-1", "qty": 2}]}' * 20,
    "compact_json": json.dumps([{"id": i, "v": [i, 2 * i, "x"]} for i in range(60)],
                               separators=(",", ":")),
    "tool_schema": json.dumps(_TOOL) * 5,
    "markdown": "| col | value |\n|---|---|\n| a | 1 |\n" * 30,
    "urls": " ".join(f"https://example.com/a/{n * 7919}?q={n}" for n in range(40)),
    "german": "Die Datenschutzgrundverordnung verlangt eine Folgenabschätzung. " * 15,
    "cjk": "日本語のテキストです。東京の天気は晴れ。" * 20,
    "cyrillic": "Быстрая коричневая лиса прыгает через ленивую собаку. " * 20,
    "arabic": "الثعلب البني السريع يقفز فوق الكلب الكسول. " * 20,
}


@pytest.fixture(autouse=True)
def fresh_tokenizers() -> Iterator[None]:
    estimate.reset()
    yield
    estimate.reset()


@pytest.fixture
def encodings(monkeypatch: pytest.MonkeyPatch) -> list[tiktoken.Encoding]:
    """tiktoken's encodings, read from the copy LlamaIndex ships (no download here)."""
    shipped = estimate._llama_index_cache_dir()
    assert shipped is not None, "llama-index-core ships tiktoken's files"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shipped))
    return [tiktoken.get_encoding(name) for name in ("cl100k_base", "o200k_base")]


def tokenizer_count(encodings: list[tiktoken.Encoding], text: str) -> int:
    return max(len(encoding.encode_ordinary(text)) for encoding in encodings)


def test_the_installed_tokenizer_counts_known_models_with_their_own_encoding(
        encodings: list[tiktoken.Encoding]) -> None:
    assert tokenizer_in_use("gpt-4o-mini") == "o200k_base"
    assert tokenizer_in_use("claude-sonnet-4") == "cl100k_base"  # for models tiktoken lacks
    text = SAMPLES["prose"]
    expected = len(encodings[1].encode_ordinary(text))
    assert estimate_tokens([text, "hi"], "gpt-4o-mini") == \
        expected + 1 + 2 * MESSAGE_OVERHEAD + REQUEST_OVERHEAD


def test_without_tiktoken_the_character_estimate_is_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    assert tokenizer_in_use("gpt-4o") is None
    # 6 letters (2 tokens), 3 digits (2), 4 symbols (4), 6 bytes of CJK (3); spaces free
    text = "abcdef 123 {}:! 日本"
    assert character_estimate(text) == 11
    assert estimate_tokens([text], "gpt-4o") == 11 + MESSAGE_OVERHEAD + REQUEST_OVERHEAD


def test_an_estimate_is_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    assert estimate_tokens([]) > 0
    assert estimate_tokens([""]) > 0
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    estimate.reset()
    assert estimate_tokens([""]) > 0
    assert input_estimate(ModelCall("m", prompt=lambda: [])) == REQUEST_OVERHEAD


@pytest.mark.parametrize("sample", SAMPLES.values(), ids=SAMPLES.keys())
def test_the_character_estimate_stays_within_the_documented_band(
        encodings: list[tiktoken.Encoding], sample: str) -> None:
    # docs/budgets.md: 0.9 to 1.7 times the larger tokenizer count on ordinary text.
    ratio = character_estimate(sample) / tokenizer_count(encodings, sample)
    assert 0.9 <= ratio <= 1.7, ratio


def test_the_character_estimate_under_counts_random_encoded_data(
        encodings: list[tiktoken.Encoding]) -> None:
    # The documented limit: random base64 and hex are 0.4-0.7x, learned after one call.
    rng = random.Random(0)
    data = bytes(rng.randrange(256) for _ in range(1500))
    for text in (base64.b64encode(data).decode(), data.hex()):
        assert 0.4 <= character_estimate(text) / tokenizer_count(encodings, text) <= 0.75


def test_no_tokenizer_file_on_disk_means_no_download(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty
    monkeypatch.setattr(estimate, "_llama_index_cache_dir", lambda: None)

    def no_network(path: str) -> bytes:
        raise AssertionError(f"spanguard tried to download {path}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    assert tokenizer_in_use("gpt-4o") is None
    assert estimate_tokens(["hello"], "gpt-4o") == character_estimate("hello") + 7


def test_the_estimate_is_made_once_per_call_and_only_when_asked() -> None:
    asked = []

    def prompt() -> list[str]:
        asked.append(1)
        return ["hello world"]

    call = ModelCall("gpt-4o", prompt=prompt)
    assert asked == []
    first = input_estimate(call)
    assert input_estimate(call) == first == call.estimated_input_tokens
    assert asked == [1]
    assert input_estimate(ModelCall("m")) is None  # nothing to count
    assert input_estimate(ModelCall("m", estimated_input_tokens=42, prompt=prompt)) == 42


def test_reply_text_has_no_request_overheads() -> None:
    assert text_tokens([], "gpt-4o") == 0
    assert text_tokens(["", "ok"], "gpt-4o") == 1
