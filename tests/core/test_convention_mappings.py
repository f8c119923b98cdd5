"""The mappings to backend vocabularies, on generated input: they never raise, never drop a
value silently, and only ever produce what the pinned conventions allow."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from spanguard import genai_messages as gm
from spanguard import semconv as sc
from spanguard.exporters.langfuse import LangfuseOptions, langfuse_attributes
from spanguard.providers import resolve_provider

FINISH_REASONS = {"stop", "length", "content_filter", "tool_call", "error"}
KNOWN_SPELLINGS = ["stop", "end_turn", "STOP", "length", "max_tokens", "MAX_TOKENS",
                   "tool_calls", "tool_use", "function_call", "content_filter", "SAFETY",
                   "error"]


@given(st.text(min_size=1, max_size=40), st.one_of(st.none(), st.text(max_size=40)))
def test_any_provider_name_resolves_to_three_non_empty_names(name: str,
                                                             model: str | None) -> None:
    if not name.strip():
        name = "x" + name
    resolved = resolve_provider(name, model)
    assert all(isinstance(part, str) and part for part in resolved)
    assert " " not in resolved.genai and resolved.genai == resolved.genai.lower()


def test_every_mapped_provider_is_a_well_known_value_of_the_pinned_version() -> None:
    from spanguard.providers import _KNOWN

    allowed = {p.value for p in sc.ProviderName}
    assert {p.genai for p in _KNOWN.values()} <= allowed


@given(st.one_of(st.sampled_from(KNOWN_SPELLINGS), st.text(max_size=20), st.none(),
                 st.integers()), st.booleans())
def test_a_finish_reason_is_always_a_string_in_the_conventions_spelling_when_known(
        reported: Any, asks_for_tools: bool) -> None:
    reason = gm.finish_reason(reported, asks_for_tools)
    assert isinstance(reason, str) and reason
    if reported in KNOWN_SPELLINGS:
        assert reason in FINISH_REASONS
    if not isinstance(reported, str) or not reported:  # nothing reported: the evidence
        assert reason == ("tool_call" if asks_for_tools else "stop")


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True), st.text(max_size=30),
                    st.lists(st.text(max_size=5), max_size=3))
_KEYS = st.sampled_from([
    sc.OPENINFERENCE_SPAN_KIND, sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    sc.GEN_AI_USAGE_INPUT_TOKENS, sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    sc.COST_USD, sc.GEN_AI_AGENT_NAME, sc.OI_INPUT_VALUE, sc.OI_OUTPUT_VALUE, sc.OI_TAG_TAGS,
    sc.HOLD_DECISION, sc.HOLD_ID, sc.HOLD_CHECKER, sc.VERIFICATION_STATUS,
    sc.VERIFICATION_REASON])


@settings(max_examples=300)
@given(st.dictionaries(_KEYS, _VALUES, max_size=10), st.booleans(),
       st.lists(st.text(min_size=1, max_size=8), max_size=3))
def test_the_langfuse_mapping_never_raises_and_writes_valid_json(
        attributes: dict[str, Any], root: bool, tags: list[str]) -> None:
    if attributes.get(sc.OPENINFERENCE_SPAN_KIND) is not None and attributes.get(
            sc.OPENINFERENCE_SPAN_KIND) != "LLM":
        attributes[sc.OPENINFERENCE_SPAN_KIND] = "LLM"
    context = SpanContext(1, 2, False, TraceFlags(1))
    span = ReadableSpan(name="s", context=context,
                        parent=None if root else SpanContext(1, 3, False, TraceFlags(1)),
                        attributes={k: v for k, v in attributes.items() if v is not None},
                        start_time=1_700_000_000_000_000_000, end_time=1_700_000_001_000_000_000)
    out = langfuse_attributes(span, LangfuseOptions(environment="e", tags=tuple(tags)))
    assert out[sc.LANGFUSE_ENVIRONMENT] == "e"
    for key in (sc.LANGFUSE_OBSERVATION_USAGE_DETAILS, sc.LANGFUSE_OBSERVATION_COST_DETAILS):
        if key in out:
            json.loads(out[key])
    if sc.LANGFUSE_OBSERVATION_USAGE_DETAILS in out:
        usage = json.loads(out[sc.LANGFUSE_OBSERVATION_USAGE_DETAILS])
        assert all(value >= 0 for value in usage.values())
        assert usage["total"] == (attributes[sc.GEN_AI_USAGE_INPUT_TOKENS]
                                  + attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS])
    if not root:
        assert not [k for k in out if k.startswith("langfuse.trace.")]
