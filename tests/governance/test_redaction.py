"""Redaction: each detector class with true positives and near misses, and where it applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

import spanguard
from spanguard import semconv as sc
from spanguard.attributes import model_attributes, tool_attributes, usage_attributes
from spanguard.errors import ConfigError
from spanguard.exporters.redacting import RedactingExporter
from spanguard.guardrails.policy import Policy
from spanguard.redaction import Redactor, is_content_key, parse_redaction_table
from tests.otlp_receiver import otlp_receiver

# (kind, text containing it, the exact sensitive substring)
TRUE_POSITIVES = [
    ("email", "write to jane.doe+billing@example.co.uk today", "jane.doe+billing@example.co.uk"),
    ("phone", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("phone", "office (415) 555-0100.", "(415) 555-0100"),
    ("phone", "cell 415-555-0100", "415-555-0100"),
    ("payment_card", "visa 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
    ("payment_card", "mc 5555-5555-5555-4444", "5555-5555-5555-4444"),
    ("payment_card", "amex 378282246310005", "378282246310005"),
    ("iban", "pay GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89370400440532013000", "DE89370400440532013000"),
    ("us_ssn", "ssn 123-45-6789.", "123-45-6789"),
    ("uk_nino", "NI number AB 12 34 56 C", "AB 12 34 56 C"),
    ("es_dni", "DNI 12345678Z", "12345678Z"),
    ("es_dni", "NIE X1234567L", "X1234567L"),
    ("ipv4", "from 192.168.10.254.", "192.168.10.254"),
    ("ipv6", "peer 2001:db8::8a2e:370:7334 up", "2001:db8::8a2e:370:7334"),
    ("ipv6", "loopback ::1", "::1"),
    ("openai_api_key", "key sk-proj-" + "Ab3_" * 10, "sk-proj-" + "Ab3_" * 10),
    ("openai_api_key", "key sk-" + "T3BlbkFJ" * 5, "sk-" + "T3BlbkFJ" * 5),
    ("anthropic_api_key", "sk-ant-api03-" + "x1Y2" * 10, "sk-ant-api03-" + "x1Y2" * 10),
    ("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    # where a key name shows, only the value is replaced: the key name stays readable
    ("aws_secret_access_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("github_token", "ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9),
    ("github_token", "github_pat_11ABCDEFG0" + "x" * 40, "github_pat_11ABCDEFG0" + "x" * 40),
    ("slack_token", "xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF"),
    ("google_api_key", "AIzaSyA" + "b" * 32, "AIzaSyA" + "b" * 32),
    ("stripe_key", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("bearer_token", "Authorization: Bearer abc.DEF-123_ghi~jkl+mno/pq",
     "abc.DEF-123_ghi~jkl+mno/pq"),
    ("jwt", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9"
            "PlFUP0THsR8U end",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9"
     "PlFUP0THsR8U"),
    ("private_key", "k=-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n"
                    "-----END OPENSSH PRIVATE KEY-----;",
     "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----"),
]

# Text that looks close but is not sensitive (or fails the format's check): left alone.
NEAR_MISSES = [
    ("email", "user@localhost and @handle and a@b"),
    ("payment_card", "order 4111 1111 1111 1112"),  # fails Luhn
    ("payment_card", "order id 1234567890123456"),  # no issuer prefix, fails Luhn
    ("payment_card", "tracking 9999999999999995"),  # passes Luhn, no issuer prefix
    ("iban", "GB82 WEST 1234 5698 7654 33"),  # one digit off: mod-97 fails
    ("us_ssn", "666-12-3456 and 900-12-3456 and 123-00-4567 and 123-45-0000"),
    ("us_ssn", "078-05-1120"),  # the advertising number, never issued
    ("uk_nino", "BG 12 34 56 C"),  # BG prefix is never issued
    ("es_dni", "12345678A"),  # wrong check letter
    ("phone", "on 2024-01-15 at 10:30, ticket 5551234, zip 94107-1234"),
    ("ipv4", "version 999.1.2.3 and v1.2.3.4 and 1.2.3.4.5 and 10.0.0"),
    ("ipv6", "std::vector, dead::beef and 12:30:45"),
    ("openai_api_key", "sk-learn-model-selection-guide-for-beginners and sk-short"),
    ("openai_api_key", "task-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"),
    ("aws_access_key_id", "AKIAIOSFODNN7EXAMPL (19 chars)"),
    ("github_token", "ghp_tooshort"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9 alone"),
    ("bearer_token", "the bearer of bad news"),
    ("private_key", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----"),
]


@pytest.mark.parametrize(("kind", "text", "secret"), TRUE_POSITIVES)
def test_true_positive_is_replaced_by_typed_placeholder(kind: str, text: str, secret: str) -> None:
    redacted, count = Redactor().redact(text)
    assert secret not in redacted
    assert f"[REDACTED:{kind}]" in redacted
    assert count == 1
    assert redacted == text.replace(secret, f"[REDACTED:{kind}]")


@pytest.mark.parametrize(("kind", "text"), NEAR_MISSES)
def test_near_miss_is_left_alone(kind: str, text: str) -> None:
    assert Redactor().redact(text) == (text, 0), kind


def test_bare_dotted_quad_is_treated_as_an_ip() -> None:
    # Documented choice: 1.2.3.4 is a valid address, so it is redacted (safe failure).
    assert Redactor().redact("release 1.2.3.4") == ("release [REDACTED:ipv4]", 1)


def test_counts_several_kinds_and_keeps_running_totals() -> None:
    redactor = Redactor()
    text = "a@example.com b@example.org card 4242424242424242 ip 10.1.2.3"
    redacted, count = redactor.redact(text)
    assert count == 4
    assert redacted == ("[REDACTED:email] [REDACTED:email] card [REDACTED:payment_card] "
                        "ip [REDACTED:ipv4]")
    assert redactor.totals == {"email": 2, "payment_card": 1, "ipv4": 1}


def test_user_patterns_run_after_builtins() -> None:
    redactor = Redactor({"order_id": r"ORD-\d{6}", "project": r"Project [A-Z][a-z]+"})
    assert redactor.redact("ORD-123456 for Project Falcon, mail x@example.com") == (
        "[REDACTED:order_id] for [REDACTED:project], mail [REDACTED:email]", 3)


@pytest.mark.parametrize(("patterns", "reason"), [
    ({"bad": "("}, "does not compile"),
    ({"empty": "x*"}, "matches the empty string"),
    ({"white space": "x"}, "is not usable"),
    ({"n": ""}, "non-empty"),
])
def test_bad_user_patterns_are_refused_with_the_reason(patterns: dict[str, str],
                                                       reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        Redactor(patterns)


def test_policy_table_parser_and_guardrails_policy_accept_redaction() -> None:
    table = {"patterns": {"order_id": r"ORD-\d+"}}
    assert parse_redaction_table(table, "p.toml") == {"order_id": r"ORD-\d+"}
    with pytest.raises(ConfigError, match="unknown key"):
        parse_redaction_table({"pattern": {}}, "p.toml")
    policy = Policy.from_mapping({"redaction": table})
    assert policy.redaction_patterns == {"order_id": r"ORD-\d+"}


def test_content_keys_cover_both_vocabularies() -> None:
    for key in (sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_OUTPUT_MESSAGES, sc.GEN_AI_TOOL_CALL_ARGUMENTS,
                sc.GEN_AI_TOOL_CALL_RESULT, sc.OI_INPUT_VALUE, sc.OI_OUTPUT_VALUE,
                "llm.input_messages.0.message.content",
                "llm.output_messages.1.message.tool_calls.0.tool_call.function.arguments",
                "retrieval.documents.3.document.content", "exception.message"):
        assert is_content_key(key), key
    for key in (sc.GEN_AI_REQUEST_MODEL, sc.GEN_AI_TOOL_NAME, sc.TOOL_ARGS_HASH,
                sc.GEN_AI_USAGE_INPUT_TOKENS, sc.OI_SESSION_ID):
        assert not is_content_key(key), key


def _provider() -> tuple[TracerProvider, InMemorySpanExporter, RedactingExporter]:
    sink = InMemorySpanExporter()
    redacting = RedactingExporter(sink, Redactor())
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(redacting))
    return provider, sink, redacting


def test_span_without_content_is_passed_through_as_the_same_object() -> None:
    provider, _, redacting = _provider()
    span = provider.get_tracer("t").start_span("chat m", attributes={
        **model_attributes("m"), **usage_attributes(10, 2)})
    span.end()
    assert redacting.redact_span(span) is span  # type: ignore[arg-type]


def test_redacted_copy_covers_attributes_arrays_events_and_error_message() -> None:
    provider, sink, _ = _provider()
    span = provider.get_tracer("t").start_span("execute_tool lookup", attributes={
        **tool_attributes("lookup"),
        sc.GEN_AI_TOOL_CALL_ARGUMENTS: json.dumps({"email": "bob@example.com"}),
        "llm.input_messages.0.message.content": "my card is 4111111111111111",
        sc.GEN_AI_OUTPUT_MESSAGES: ("ok", "ring +1 415 555 0100"),
    })
    span.add_event("exception", {"exception.message": "no user bob@example.com",
                                 "exception.type": "KeyError"})
    span.set_status(Status(StatusCode.ERROR, "lookup failed for bob@example.com"))
    span.end()
    (exported,) = sink.get_finished_spans()
    attrs = exported.attributes
    assert attrs is not None
    assert attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"email": "[REDACTED:email]"}'
    assert attrs["llm.input_messages.0.message.content"] == "my card is [REDACTED:payment_card]"
    assert tuple(attrs[sc.GEN_AI_OUTPUT_MESSAGES]) == ("ok", "ring [REDACTED:phone]")
    assert attrs[sc.GEN_AI_TOOL_NAME] == "lookup"
    assert exported.events[0].attributes == {"exception.message": "no user [REDACTED:email]",
                                             "exception.type": "KeyError"}
    assert exported.status.description == "lookup failed for [REDACTED:email]"
    assert attrs[sc.REDACTION_COUNT] == 5
    # the original finished span is untouched (another destination may want it raw)
    assert span.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"email": "bob@example.com"}'


def test_content_without_matches_gets_a_zero_count_for_the_rate() -> None:
    provider, sink, _ = _provider()
    provider.get_tracer("t").start_span("chat", attributes={
        sc.OI_INPUT_VALUE: "what is the weather"}).end()
    (exported,) = sink.get_finished_spans()
    assert exported.attributes is not None
    assert exported.attributes[sc.REDACTION_COUNT] == 0


def test_redaction_failure_fails_closed() -> None:
    class Broken(Redactor):
        def redact(self, text: str) -> tuple[str, int]:
            raise RuntimeError("boom")

    sink = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(sink, Broken())))
    provider.get_tracer("t").start_span("s", attributes={
        sc.OI_INPUT_VALUE: "secret bob@example.com", sc.GEN_AI_REQUEST_MODEL: "m"}).end()
    (exported,) = sink.get_finished_spans()
    assert exported.attributes is not None
    assert exported.attributes[sc.OI_INPUT_VALUE] == "[REDACTED:error]"
    assert exported.attributes[sc.GEN_AI_REQUEST_MODEL] == "m"


def _emit_content_span(handle: spanguard.SpanguardHandle) -> None:
    tracer = handle.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-test", attributes={
            **model_attributes("gpt-test"),
            sc.OI_INPUT_VALUE: "I am ann@example.com, key sk-ant-api03-" + "z9" * 15,
            sc.OI_OUTPUT_VALUE: "Thanks, noted."}):
        pass
    handle.force_flush()


def test_otlp_gets_redacted_form_while_store_is_redacted_by_default() -> None:
    with otlp_receiver() as receiver:
        handle = spanguard.configure(otlp_endpoint=receiver.endpoint + "/v1/traces")
        _emit_content_span(handle)
        otlp_span = receiver.span_named("chat gpt-test")
        assert handle.store is not None
        (stored,) = handle.store.spans()
        handle.shutdown()
    expected = "I am [REDACTED:email], key [REDACTED:anthropic_api_key]"
    assert otlp_span["attributes"][sc.OI_INPUT_VALUE] == expected
    assert otlp_span["attributes"][sc.REDACTION_COUNT] == 2
    assert stored.attributes[sc.OI_INPUT_VALUE] == expected


def test_store_keeps_raw_content_only_when_asked_and_otlp_stays_redacted() -> None:
    with otlp_receiver() as receiver:
        handle = spanguard.configure(otlp_endpoint=receiver.endpoint + "/v1/traces",
                                     store_raw_content=True)
        _emit_content_span(handle)
        otlp_span = receiver.span_named("chat gpt-test")
        assert handle.store is not None
        (stored,) = handle.store.spans()
        handle.shutdown()
    assert "ann@example.com" in stored.attributes[sc.OI_INPUT_VALUE]
    assert sc.REDACTION_COUNT not in stored.attributes
    assert "ann@example.com" not in json.dumps(otlp_span)
    assert otlp_span["attributes"][sc.OI_INPUT_VALUE].startswith("I am [REDACTED:email]")


def test_policy_file_patterns_and_argument_patterns_reach_the_exporters(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[redaction]\npatterns = { ticket = "TCK-[0-9]{4}" }\n')
    handle = spanguard.configure(policy=policy, redaction_patterns={"badge": r"BDG\d{3}"})
    tracer = handle.tracer_provider.get_tracer("test")
    tracer.start_span("s", attributes={sc.OI_INPUT_VALUE: "TCK-1234 by BDG007"}).end()
    handle.force_flush()
    assert handle.store is not None
    (stored,) = handle.store.spans()
    handle.shutdown()
    assert stored.attributes[sc.OI_INPUT_VALUE] == "[REDACTED:ticket] by [REDACTED:badge]"


def test_bad_policy_pattern_is_reported_and_builtins_still_apply(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[redaction]\npatterns = { broken = "(" }\n')
    handle = spanguard.configure(policy=policy)
    assert any("broken" in problem for problem in handle.problems)
    assert handle.redactor.redact("x@example.com") == ("[REDACTED:email]", 1)
    handle.shutdown()
    with pytest.raises(ConfigError, match="broken"):
        spanguard.configure(policy=policy, strict=True)
