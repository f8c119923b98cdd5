"""Redaction quality: every form issue #20 listed, recall per detector, false positives.

The corpus (``redaction_corpus.py``) is shared with ``benchmarks/redaction_quality.py``;
hypothesis generates further valid numbers with the libraries' own rules.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import iban, luhn
from stdnum.us import ssn

from spanguard.redaction import DEFAULT_PHONE_REGIONS, Redactor
from tests.governance.redaction_corpus import (
    CARD_PREFIXES,
    CONTEXTS,
    IBAN_COUNTRIES,
    Positive,
    benign,
    card_layout,
    found,
    group,
    positives,
    valid_card,
    valid_iban,
)

REDACTOR = Redactor()

# (variant of issue #20, text, the sensitive part, expected kind)
ISSUE_VARIANTS = {
    "uk-national-phone": ("Call our London office on 020 7946 0958.", "020 7946 0958", "phone"),
    "uk-national-mobile": ("text me on 07400 123456", "07400 123456", "phone"),
    "de-national-phone": ("Rufen Sie 030 123456 an.", "030 123456", "phone"),
    "de-national-mobile": ("Handy: 0151 23456789", "0151 23456789", "phone"),
    "fr-national-phone": ("Appelez le 01 23 45 67 89.", "01 23 45 67 89", "phone"),
    "fr-national-mobile": ("portable 06 12 34 56 78", "06 12 34 56 78", "phone"),
    "jp-national-phone": ("電話 03-1234-5678 まで", "03-1234-5678", "phone"),
    "00-prefix-uk": ("from abroad dial 0044 20 7946 0958", "0044 20 7946 0958", "phone"),
    "00-prefix-de": ("international: 0049 30 123456", "0049 30 123456", "phone"),
    "00-prefix-fr": ("ou 0033 1 23 45 67 89", "0033 1 23 45 67 89", "phone"),
    "bare-nanp": ("call me at 4155550100 tomorrow", "4155550100", "phone"),
    "bare-nanp-in-json": ('{"name": "Ann", "phone": "2125550147"}', "2125550147", "phone"),
    "iban-lower-case": ("iban de89 3704 0044 0532 0130 00 thanks",
                        "de89 3704 0044 0532 0130 00", "iban"),
    "iban-dashes": ("IBAN: DE89-3704-0044-0532-0130-00.", "DE89-3704-0044-0532-0130-00", "iban"),
    "card-dots": ("card 4111.1111.1111.1111 exp 12/29", "4111.1111.1111.1111", "payment_card"),
    "card-double-spaces": ("card 4111  1111  1111  1111 ok", "4111  1111  1111  1111",
                           "payment_card"),
    "email-quoted-local-part": ('write to "john doe"@example.com', '"john doe"@example.com',
                                "email"),
    "email-idn-domain": ("jane@bücher.de wrote", "jane@bücher.de", "email"),
    "email-non-ascii-local-part": ("contact josé@exämple.de now", "josé@exämple.de", "email"),
    "email-non-latin": ("邮箱 用户@例子.中国", "用户@例子.中国", "email"),
    "aws-secret-access-key-alone": ("my key is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok",
                                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                    "aws_secret_access_key"),
    "aws-secret-access-key-json": (
        '{"AccessKeyId": "ASIAIOSFODNN7EXAMPLE", '
        '"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key"),
    "bearer-in-capitals": ("Authorization: BEARER abcdef0123456789abcdef",
                           "abcdef0123456789abcdef", "bearer_token"),
    "http-basic-header": ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==",
                          "basic_auth"),
    "http-basic-in-url": ("GET https://admin:s3cret@db.example.com/x", "admin:s3cret",
                          "basic_auth"),
    "ssn-with-spaces": ("SSN 123 45 6789 on file", "123 45 6789", "us_ssn"),
}


@pytest.mark.parametrize("variant", sorted(ISSUE_VARIANTS))
def test_issue_20_variant_is_redacted(variant: str) -> None:
    text, secret, kind = ISSUE_VARIANTS[variant]
    redacted, count = REDACTOR.redact(text)
    assert secret not in redacted, redacted
    assert f"[REDACTED:{kind}]" in redacted, redacted
    assert count >= 1


def test_issue_20_variants_keep_the_text_around_them() -> None:
    assert REDACTOR.redact('{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}') == (
        '{"SecretAccessKey": "[REDACTED:aws_secret_access_key]"}', 1)
    assert REDACTOR.redact("Authorization: BEARER abcdef0123456789abcdef") == (
        "Authorization: BEARER [REDACTED:bearer_token]", 1)
    assert REDACTOR.redact("iban de89 3704 0044 0532 0130 00 thanks") == (
        "iban [REDACTED:iban] thanks", 1)


CORPUS = positives()
KINDS = sorted({p.kind for p in CORPUS})


def test_corpus_covers_every_built_in_detector() -> None:
    built_in = {detector.kind for detector in REDACTOR.detectors}
    assert built_in <= set(KINDS) | {"slack_webhook"}, built_in - set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_recall_per_detector_is_at_least_99_percent(kind: str) -> None:
    cases = [p for p in CORPUS if p.kind == kind]
    missed = [(p.label, p.secret, REDACTOR.redact(p.text)[0]) for p in cases
              if not found(REDACTOR.redact(p.text)[0], p)]
    recall = 1 - len(missed) / len(cases)
    assert recall >= 0.99, f"{kind}: recall {recall:.3f} over {len(cases)}; missed {missed[:10]}"


def test_recall_covers_every_locale_of_the_phone_plan() -> None:
    regions = {p.label.split()[0] for p in CORPUS if p.kind == "phone"}
    assert regions >= set(phonenumbers.SUPPORTED_REGIONS) - {"001"} - _regions_without_examples()


def _regions_without_examples() -> set[str]:
    return {r for r in phonenumbers.SUPPORTED_REGIONS
            if phonenumbers.example_number_for_type(r, phonenumbers.PhoneNumberType.FIXED_LINE)
            is None and phonenumbers.example_number_for_type(
                r, phonenumbers.PhoneNumberType.MOBILE) is None}


BENIGN = benign()


def test_false_positives_on_the_benign_corpus_are_at_most_1_percent() -> None:
    flagged = [(category, text, REDACTOR.redact(text)[0]) for category, text in BENIGN
               if REDACTOR.redact(text)[1]]
    rate = len(flagged) / len(BENIGN)
    assert rate <= 0.01, f"false positives {rate:.2%} of {len(BENIGN)}: {flagged[:15]}"


@pytest.mark.parametrize("category", sorted({c for c, _ in BENIGN}))
def test_benign_category_is_not_systematically_redacted(category: str) -> None:
    texts = [text for c, text in BENIGN if c == category]
    flagged = Counter(REDACTOR.redact(text)[1] > 0 for text in texts)[True]
    assert flagged / len(texts) <= 0.05, category


def test_benign_corpus_has_each_family_the_issue_names() -> None:
    families = {c for c, _ in BENIGN}
    assert {"code", "uuid", "timestamp", "hash", "version", "price", "order"} <= families
    assert len(BENIGN) >= 2000


# --- generated valid numbers (hypothesis) ---------------------------------------------------
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _in_context(context: str, value: str) -> str:
    return context.format(value)


@FAST
@given(country=st.sampled_from(IBAN_COUNTRIES), rng=st.randoms(use_true_random=False),
       form=st.sampled_from(["compact", "grouped", "lower", "dashes"]),
       context=st.sampled_from(CONTEXTS))
def test_any_valid_iban_is_redacted(country: str, rng: random.Random, form: str,
                                    context: str) -> None:
    value = valid_iban(rng, country)
    assert iban.is_valid(value)
    written = {"compact": value, "grouped": group(value), "lower": group(value).lower(),
               "dashes": group(value, 4, "-")}[form]
    assert found(REDACTOR.redact(_in_context(context, written))[0],
                 Positive("iban", form, "", written))


@FAST
@given(prefix=st.sampled_from(CARD_PREFIXES), rng=st.randoms(use_true_random=False),
       separator=st.sampled_from(["", " ", "-", ".", "  "]), context=st.sampled_from(CONTEXTS))
def test_any_luhn_valid_card_is_redacted(prefix: str, rng: random.Random, separator: str,
                                         context: str) -> None:
    number = valid_card(rng, prefix)
    assert luhn.is_valid(number)
    written = card_layout(number, separator) if separator else number
    assert found(REDACTOR.redact(_in_context(context, written))[0],
                 Positive("payment_card", separator, "", written))


@FAST
@given(prefix=st.sampled_from(CARD_PREFIXES), rng=st.randoms(use_true_random=False))
def test_a_card_one_digit_off_is_left_alone(prefix: str, rng: random.Random) -> None:
    number = valid_card(rng, prefix)
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)  # Luhn fails
    assert REDACTOR.redact(f"order {group(wrong)} shipped") == (f"order {group(wrong)} shipped",
                                                               0)


PHONE_EXAMPLES = sorted(
    (region, number_type)
    for region in phonenumbers.SUPPORTED_REGIONS
    for number_type in (phonenumbers.PhoneNumberType.FIXED_LINE,
                        phonenumbers.PhoneNumberType.MOBILE)
    if phonenumbers.example_number_for_type(region, number_type) is not None)


@FAST
@given(example=st.sampled_from(PHONE_EXAMPLES),
       style=st.sampled_from(["international", "e164", "00"]),
       context=st.sampled_from(CONTEXTS))
def test_valid_phone_numbers_of_every_region_are_redacted(example: tuple[str, int], style: str,
                                                          context: str) -> None:
    number = phonenumbers.example_number_for_type(*example)
    intl = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    written = {"international": intl, "00": "00" + intl[1:],
               "e164": phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
               }[style]
    assert found(REDACTOR.redact(_in_context(context, written))[0],
                 Positive("phone", style, "", written))


@FAST
@given(region=st.sampled_from(DEFAULT_PHONE_REGIONS),
       mobile=st.booleans(), context=st.sampled_from(CONTEXTS))
def test_national_formats_of_the_default_regions_are_redacted(region: str, mobile: bool,
                                                              context: str) -> None:
    types = phonenumbers.PhoneNumberType
    number = phonenumbers.example_number_for_type(
        region, types.MOBILE if mobile else types.FIXED_LINE)
    written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    assert found(REDACTOR.redact(_in_context(context, written))[0],
                 Positive("phone", region, "", written))


@FAST
@given(area=st.integers(1, 899), group_=st.integers(1, 99), serial=st.integers(1, 9999),
       separator=st.sampled_from(["-", " "]))
def test_issued_ssns_are_redacted_and_never_issued_ones_are_not(
        area: int, group_: int, serial: int, separator: str) -> None:
    value = f"{area:03d}{separator}{group_:02d}{separator}{serial:04d}"
    redacted, count = REDACTOR.redact(f"ssn {value}.")
    if ssn.is_valid(value.replace(" ", "-")):
        assert redacted == "ssn [REDACTED:us_ssn]." and count == 1
    else:  # area 666, or one of the SSA's never-issued numbers
        assert value in redacted


# --- adversarial input ---------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_redacts_without_error_and_redaction_is_idempotent(text: str) -> None:
    redacted, _ = REDACTOR.redact(text)
    assert REDACTOR.redact(redacted) == (redacted, 0)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789 +-.()/:@abcXYZ\n"), max_size=120))
def test_number_soup_spans_are_sorted_and_disjoint(text: str) -> None:
    spans = REDACTOR.find(text)
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert end <= start
    assert all(0 <= s < e <= len(text) for s, e, _ in spans)


def test_counts_and_totals_follow_the_spans() -> None:
    redactor = Redactor()
    text = ("call 020 7946 0958 or mail jane@bücher.de, card 4111.1111.1111.1111, "
            "iban de89 3704 0044 0532 0130 00")
    redacted, count = redactor.redact(text)
    assert count == 4
    assert redactor.totals == Counter({"phone": 1, "email": 1, "payment_card": 1, "iban": 1})
    assert redacted == ("call [REDACTED:phone] or mail [REDACTED:email], card "
                        "[REDACTED:payment_card], iban [REDACTED:iban]")


def test_overlapping_detections_merge_under_the_earlier_detector() -> None:
    # the URL credential and the address after it overlap: one span, named for the credential
    redacted, count = REDACTOR.redact("postgres://app:pw1234@db.example.com/x")
    assert redacted == "postgres://[REDACTED:basic_auth]/x" and count == 1


def test_per_detector_recall_table_is_what_the_benchmark_prints() -> None:
    table: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for positive in CORPUS:
        table[positive.kind][0] += found(REDACTOR.redact(positive.text)[0], positive)
        table[positive.kind][1] += 1
    assert set(table) == set(KINDS)
    assert all(hits <= total for hits, total in table.values())


def test_one_redactor_shared_by_many_exporter_threads_gives_the_serial_answers() -> None:
    """configure() shares one Redactor between every destination's exporter thread."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [p.text for p in CORPUS[::7]] + [text for _, text in BENIGN[::11]]
    serial = [Redactor().redact(text) for text in texts]
    shared = Redactor()  # fresh: the libraries' lazy imports and metadata load under threads
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(shared.redact, texts * 3))
    assert results == serial * 3
    assert sum(shared.totals.values()) == 3 * sum(count for _, count in serial)
