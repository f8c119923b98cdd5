"""Both vocabularies on every span kind; keyed hashing; the price table."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openinference.semconv.trace import SpanAttributes
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from spanguard import attributes as attrs
from spanguard.errors import ConfigError
from spanguard.hashing import KeyedHasher, load_or_create_key, payload_hash
from spanguard.pricing import PriceTable


@pytest.mark.parametrize(
    ("builder", "operation", "kind"),
    [
        (lambda: attrs.agent_attributes("support"), "invoke_agent", "AGENT"),
        (lambda: attrs.model_attributes("gpt-4o", "openai"), "chat", "LLM"),
        (lambda: attrs.tool_attributes("search", "call_1"), "execute_tool", "TOOL"),
        (lambda: attrs.retrieval_attributes("kb"), "retrieval", "RETRIEVER"),
        (lambda: attrs.embedding_attributes("e5"), "embeddings", "EMBEDDING"),
    ],
)
def test_every_kind_carries_both_vocabularies(builder, operation, kind) -> None:  # type: ignore[no-untyped-def]
    values = builder()
    assert values[gen_ai.GEN_AI_OPERATION_NAME] == operation
    assert values[SpanAttributes.OPENINFERENCE_SPAN_KIND] == kind


def test_chain_and_guardrail_have_openinference_kind_only() -> None:
    assert attrs.KIND_CHAIN == {SpanAttributes.OPENINFERENCE_SPAN_KIND: "CHAIN"}
    guard = attrs.guardrail_attributes("budget", "deny", "over limit", limit=10)
    assert guard[SpanAttributes.OPENINFERENCE_SPAN_KIND] == "GUARDRAIL"
    assert gen_ai.GEN_AI_OPERATION_NAME not in guard


def test_model_and_usage_attributes_in_both_vocabularies() -> None:
    values = attrs.model_attributes("gpt-4o", "openai", temperature=0.2, max_tokens=64)
    assert values[gen_ai.GEN_AI_REQUEST_MODEL] == values[SpanAttributes.LLM_MODEL_NAME] == "gpt-4o"
    assert values[gen_ai.GEN_AI_PROVIDER_NAME] == values[SpanAttributes.LLM_PROVIDER] == "openai"
    usage = attrs.usage_attributes(100, 20, cache_read=40, reasoning=5)
    assert usage[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == usage[SpanAttributes.LLM_TOKEN_COUNT_PROMPT]
    assert usage[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 120
    assert usage[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 40
    assert usage[gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 5
    assert gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS not in usage


def test_span_names_follow_the_design_table() -> None:
    assert attrs.agent_span_name("a") == "invoke_agent a"
    assert attrs.chat_span_name("m") == "chat m"
    assert attrs.tool_span_name("t") == "execute_tool t"
    assert attrs.retrieval_span_name("kb") == "retrieval kb"
    assert attrs.embeddings_span_name("e") == "embeddings e"
    assert attrs.guardrail_span_name("p") == "guardrail p"


def test_keyed_hash_is_stable_keyed_and_never_raw() -> None:
    one = KeyedHasher(b"k" * 32)
    two = KeyedHasher(b"j" * 32)
    assert one("alice@example.com") == one("alice@example.com")
    assert one("alice@example.com") != two("alice@example.com")
    assert one("alice@example.com") != one("bob@example.com")
    assert "alice" not in one("alice@example.com")
    with pytest.raises(ValueError):
        KeyedHasher(b"short")


def test_hash_key_is_created_once_and_reused(tmp_path: Path) -> None:
    key, problem = load_or_create_key(tmp_path)
    again, _ = load_or_create_key(tmp_path)
    assert problem is None and key == again
    assert (tmp_path / "hash.key").stat().st_mode & 0o777 == 0o600


def test_hash_key_from_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANGUARD_HASH_KEY", "00" * 32)
    key, _ = load_or_create_key(tmp_path)
    assert key == bytes(32)
    assert not (tmp_path / "hash.key").exists()


def test_payload_hash_is_canonical() -> None:
    assert payload_hash({"b": 1, "a": [1, 2]}) == payload_hash({"a": [1, 2], "b": 1})
    assert payload_hash({"a": 1}) != payload_hash({"a": 2})
    assert payload_hash({}).startswith("sha256:")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=10))
def test_payload_hash_is_the_sha256_any_other_party_computes(value: object) -> None:
    """Holds bind approvals to this digest: it is plain SHA-256 of canonical JSON,
    whichever SHA-256 implementation computed it."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert payload_hash(value) == "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_price_lookups_and_cost() -> None:
    prices = PriceTable.default()
    assert prices.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.50)
    assert prices.cost("gpt-4o-2024-08-06", 0, 1_000_000) == pytest.approx(10.0)
    assert prices.cost("openai:gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    # cached input tokens are part of input tokens and billed at the cached rate
    assert prices.cost("gpt-4o", 1_000_000, 0, cached_input_tokens=1_000_000) == pytest.approx(1.25)
    assert prices.cost("GPT-4O", 1_000_000, 0) == pytest.approx(2.50)


def test_unknown_model_cost_is_unknown_not_zero() -> None:
    prices = PriceTable.default()
    assert prices.cost("my-private-model", 1000, 1000) is None
    assert prices.cost(None, 1000, 1000) is None
    assert prices.cost("gpt-4oxyz", 1000, 1000) is None  # a prefix is not a match


def test_user_price_file_overrides_and_extends(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."gpt-4o"]\ninput = 1.0\noutput = 2.0\n'
                    '[models."house-model"]\ninput = 0.5\noutput = 0.5\n')
    prices = PriceTable.load(path, base=PriceTable.default())
    assert prices.cost("gpt-4o", 1_000_000, 0) == pytest.approx(1.0)
    assert prices.cost("house-model", 0, 2_000_000) == pytest.approx(1.0)
    assert prices.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not toml [", "not valid TOML"),
        ('[models."x"]\ninput = 1.0\n', "lacks 'output'"),
        ('[models."x"]\ninput = -1\noutput = 1\n', "non-negative"),
        ("title = 'no models'\n", "missing"),
    ],
)
def test_invalid_price_file_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        PriceTable.load(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)
