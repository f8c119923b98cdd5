"""Redaction configuration and the optional backends (detect-secrets, Presidio).

Presidio runs for real here, with a spaCy pipeline the test builds and saves
itself (an ``entity_ruler`` that knows two names and a street): no statistical
model can be downloaded on this machine, so these tests prove the adapter
(configuration, Presidio's analyzer, span mapping, merging, export), not the
quality of a NER model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import spanguard
from spanguard import semconv as sc
from spanguard.errors import ConfigError
from spanguard.redaction import Redactor, parse_redaction_table
from spanguard.redaction.detect_secrets_rules import DetectSecretsRules
from spanguard.redaction.ner import PresidioRecognizer
from spanguard.redaction.settings import parse_redaction_settings
from tests.governance.redaction_corpus import benign
from tests.otlp_receiver import otlp_receiver

TWILIO_KEY = "SK" + "0123456789abcdef" * 2  # a format only detect-secrets knows


# --- detect-secrets ---------------------------------------------------------------------------
def test_detect_secrets_rules_add_formats_the_built_in_rules_do_not_know() -> None:
    text = f"twilio {TWILIO_KEY} done"
    assert Redactor().redact(text) == (text, 0)
    redacted, count = Redactor(recognizers=[DetectSecretsRules()]).redact(text)
    assert redacted == "twilio [REDACTED:twilio_api_key] done" and count == 1


def test_detect_secrets_rules_redact_the_whole_match_not_the_captured_prefix() -> None:
    # detect-secrets' GitLab rule captures only "glpat"; the token must still go
    token = "glpat-" + "AbCdEfGhIj0123456789"
    redacted, _ = Redactor(detectors=(), recognizers=[DetectSecretsRules()]).redact(
        f"token {token} end")
    assert token not in redacted and "AbCdEfGhIj" not in redacted


def test_detect_secrets_rules_keep_false_positives_under_1_percent() -> None:
    redactor = Redactor(recognizers=[DetectSecretsRules()])
    items = benign()
    flagged = [text for _, text in items if redactor.redact(text)[1]]
    assert len(flagged) / len(items) <= 0.01, flagged[:10]


def test_configure_turns_detect_secrets_on_by_argument_or_policy(tmp_path: Path) -> None:
    handle = spanguard.configure(local_store=False, redaction_detect_secrets=True)
    assert handle.redactor.redact(TWILIO_KEY)[0] == "[REDACTED:twilio_api_key]"
    handle.shutdown()
    policy = tmp_path / "policy.toml"
    policy.write_text("[redaction]\ndetect_secrets = true\n")
    handle = spanguard.configure(local_store=False, policy=policy)
    assert handle.redactor.redact(TWILIO_KEY)[0] == "[REDACTED:twilio_api_key]"
    handle.shutdown()
    handle = spanguard.configure(local_store=False)  # off by default: the built-in rules only
    assert handle.redactor.redact(TWILIO_KEY) == (TWILIO_KEY, 0)
    handle.shutdown()


def test_missing_detect_secrets_is_reported_and_built_in_rules_still_apply(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "detect_secrets"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "detect_secrets", None)  # import now fails
    with pytest.raises(ConfigError, match=r"spanguard\[secrets\]"):
        DetectSecretsRules()
    handle = spanguard.configure(local_store=False, redaction_detect_secrets=True)
    assert any("detect-secrets is not installed" in p for p in handle.problems)
    assert handle.redactor.redact("key AKIAIOSFODNN7EXAMPLE") == (
        "key [REDACTED:aws_access_key_id]", 1)
    handle.shutdown()


# --- Presidio (NER) -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ruler_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved spaCy pipeline whose entity_ruler knows two people, a city and a street."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([
        {"label": "PERSON", "pattern": [{"LOWER": "jane"}, {"LOWER": "roe"}]},
        {"label": "PERSON", "pattern": [{"LOWER": "rahul"}, {"LOWER": "mehta"}]},
        {"label": "GPE", "pattern": "Springfield"},
        {"label": "FAC", "pattern": [{"IS_DIGIT": True}, {"IS_TITLE": True},
                                     {"LOWER": "street"}]},
    ])
    path = tmp_path_factory.mktemp("spacy") / "ruler-en"
    nlp.to_disk(path)
    return str(path)


def test_presidio_names_and_addresses_become_typed_placeholders(ruler_model: str) -> None:
    redactor = Redactor(recognizers=[PresidioRecognizer(ruler_model)])
    text = "Jane Roe moved to 12 Main Street, Springfield; call +44 20 7946 0958."
    assert redactor.redact(text) == (
        "[REDACTED:person] moved to [REDACTED:location], [REDACTED:location]; call "
        "[REDACTED:phone].", 4)


def test_presidio_entities_can_be_narrowed(ruler_model: str) -> None:
    redactor = Redactor(recognizers=[PresidioRecognizer(ruler_model, entities=["PERSON"])])
    assert redactor.redact("Rahul Mehta lives in Springfield") == (
        "[REDACTED:person] lives in Springfield", 1)


def test_presidio_span_overlapping_a_later_pattern_merges_into_one_placeholder(
        ruler_model: str) -> None:
    redactor = Redactor({"company": r"Roe \w+"}, recognizers=[PresidioRecognizer(ruler_model)])
    # PERSON "Jane Roe" and the user's "Roe Holdings" overlap: one span, the earlier kind
    assert redactor.redact("ask Jane Roe Holdings today") == (
        "ask [REDACTED:person] today", 1)


def test_configure_with_a_ner_model_redacts_names_before_otlp(ruler_model: str) -> None:
    with otlp_receiver() as receiver:
        handle = spanguard.configure(otlp_endpoint=receiver.endpoint + "/v1/traces",
                                     redaction_ner=ruler_model, local_store=False)
        assert handle.problems == []
        tracer = handle.tracer_provider.get_tracer("test")
        tracer.start_span("chat m", attributes={
            sc.OI_INPUT_VALUE: "Please ship to Jane Roe, 12 Main Street"}).end()
        handle.shutdown()
    span = receiver.span_named("chat m")
    assert span["attributes"][sc.OI_INPUT_VALUE] == (
        "Please ship to [REDACTED:person], [REDACTED:location]")
    assert all(b"Jane Roe" not in body for body in receiver.bodies)


def test_missing_spacy_model_is_a_config_error_that_never_downloads() -> None:
    with pytest.raises(ConfigError, match="never downloads") as error:
        PresidioRecognizer("en_core_web_this_model_does_not_exist")
    assert "python -m spacy download" in str(error.value)
    handle = spanguard.configure(local_store=False,
                                 redaction_ner="en_core_web_this_model_does_not_exist")
    assert any("is not installed" in problem for problem in handle.problems)
    assert handle.redactor.redact("x@example.com") == ("[REDACTED:email]", 1)
    handle.shutdown()
    with pytest.raises(ConfigError, match="not installed"):
        spanguard.configure(local_store=False, strict=True,
                            redaction_ner="en_core_web_this_model_does_not_exist")


def test_missing_presidio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)
    with pytest.raises(ConfigError, match=r"spanguard\[ner\]"):
        PresidioRecognizer("en_core_web_lg")


def test_ner_is_off_by_default() -> None:
    handle = spanguard.configure(local_store=False)
    assert handle.redactor.recognizers == ()
    assert handle.redactor.redact("Jane Roe") == ("Jane Roe", 0)
    handle.shutdown()


# --- the [redaction] table and configure() arguments ---------------------------------------------
def test_phone_regions_choose_the_national_formats(tmp_path: Path) -> None:
    spanish = "llame al 912 34 56 78"  # Madrid, national format; ES is not a default region
    assert Redactor().redact(spanish) == (spanish, 0)
    assert Redactor(phone_regions=["ES"]).redact(spanish) == ("llame al [REDACTED:phone]", 1)
    assert Redactor(phone_regions=["ES"]).redact("call 020 7946 0958")[1] == 0  # GB not listed
    policy = tmp_path / "policy.toml"
    policy.write_text('[redaction]\nphone_regions = ["es", "GB"]\n')
    handle = spanguard.configure(local_store=False, policy=policy)
    assert handle.redactor.redact(spanish)[1] == 1
    handle.shutdown()
    handle = spanguard.configure(local_store=False, redaction_phone_regions=["ES"])
    assert handle.redactor.redact(spanish)[1] == 1
    handle.shutdown()


@pytest.mark.parametrize(("table", "message"), [
    ({"phone_regions": ["XX"]}, "unknown phone region"),
    ({"phone_regions": "GB"}, "list of region codes"),
    ({"detect_secrets": "yes"}, "true or false"),
    ({"ner_model": ""}, "spaCy model name or path"),
    ({"ner": "x"}, "unknown key"),
])
def test_bad_redaction_table_is_a_config_error_naming_the_key(table: dict[str, object],
                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_redaction_settings(table, "p.toml [redaction]")
    with pytest.raises(ConfigError, match=message):
        parse_redaction_table(table, "p.toml [redaction]")  # what guardrails' Policy calls


def test_full_redaction_table_parses() -> None:
    settings = parse_redaction_settings({
        "patterns": {"ticket": "TCK-[0-9]+"}, "phone_regions": ["gb", "de"],
        "detect_secrets": True, "ner_model": "en_core_web_sm"}, "p.toml")
    assert settings.phone_regions == ("GB", "DE")
    assert settings.detect_secrets is True and settings.ner_model == "en_core_web_sm"
    assert dict(settings.patterns) == {"ticket": "TCK-[0-9]+"}
