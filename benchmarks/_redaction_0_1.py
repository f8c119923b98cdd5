"""spanguard 0.1's regex-only redactor, kept verbatim as the baseline of redaction_quality.py.

Not used by spanguard itself: the benchmark measures the library-backed
detectors against it in the same run (cost per 2 KB message, recall).
"""
from __future__ import annotations

import ipaddress
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spanguard import semconv as sc
from spanguard.errors import ConfigError

__all__ = [
    "CONTENT_ATTRIBUTES",
    "CONTENT_PREFIXES",
    "DEFAULT_DETECTORS",
    "Detector",
    "Redactor",
    "is_content_key",
    "parse_redaction_table",
    "placeholder",
]

# --- which attributes are content ---------------------------------------------
# Exact keys whose values are user or model text.
CONTENT_ATTRIBUTES: frozenset[str] = frozenset({
    sc.GEN_AI_INPUT_MESSAGES,
    sc.GEN_AI_OUTPUT_MESSAGES,
    sc.GEN_AI_SYSTEM_INSTRUCTIONS,
    sc.GEN_AI_PROMPT,
    sc.GEN_AI_COMPLETION,
    sc.GEN_AI_TOOL_CALL_ARGUMENTS,
    sc.GEN_AI_TOOL_CALL_RESULT,
    sc.GEN_AI_RETRIEVAL_QUERY_TEXT,
    sc.OI_INPUT_VALUE,
    sc.OI_OUTPUT_VALUE,
    sc.OI_LLM_PROMPTS,
    sc.OI_LLM_PROMPT_TEMPLATE_VARIABLES,
    sc.EXCEPTION_MESSAGE,
    sc.EXCEPTION_STACKTRACE,
})
# Flattened OpenInference lists: ``llm.input_messages.0.message.content``,
# ``retrieval.documents.3.document.content``, ``embedding.embeddings.0.embedding.text``.
CONTENT_PREFIXES: tuple[str, ...] = (
    sc.OI_LLM_INPUT_MESSAGES + ".",
    sc.OI_LLM_OUTPUT_MESSAGES + ".",
    sc.OI_RETRIEVAL_DOCUMENTS + ".",
    sc.OI_EMBEDDING_EMBEDDINGS + ".",
    sc.OI_LLM_PROMPTS + ".",
)


def is_content_key(key: str) -> bool:
    return key in CONTENT_ATTRIBUTES or key.startswith(CONTENT_PREFIXES)


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


# --- validators -----------------------------------------------------------------
def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_valid(number: str) -> bool:
    total = 0
    for index, ch in enumerate(reversed(number)):
        digit = ord(ch) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


_CARD_PREFIX = re.compile(
    r"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|3(?:0[0-5]|[68])"
    r"|6(?:011|5|4[4-9]|2)|35(?:2[89]|[3-8]\d)")


def _valid_card(match: re.Match[str]) -> bool:
    number = _digits(match.group())
    return 13 <= len(number) <= 19 and bool(_CARD_PREFIX.match(number)) and luhn_valid(number)


def _valid_iban(match: re.Match[str]) -> bool:
    iban = match.group().replace(" ", "").upper()
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _valid_ipv4(match: re.Match[str]) -> bool:
    return all(int(part) <= 255 for part in match.group().split("."))


def _valid_ipv6(match: re.Match[str]) -> bool:
    text = match.group()
    if not any(ch.isdigit() for ch in text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_SSN_NOT_ISSUED = frozenset({"078-05-1120", "219-09-9999"})


def _valid_ssn(match: re.Match[str]) -> bool:
    return match.group() not in _SSN_NOT_ISSUED


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _valid_dni(match: re.Match[str]) -> bool:
    text = match.group().upper()
    body = text[:-1]
    if body[0] in "XYZ":  # NIE: the letter stands for a leading digit
        body = str("XYZ".index(body[0])) + body[1:]
    return _DNI_LETTERS[int(body) % 23] == text[-1]


def _valid_phone(match: re.Match[str]) -> bool:
    return 8 <= len(_digits(match.group())) <= 15


# --- detectors --------------------------------------------------------------------
@dataclass(frozen=True)
class Detector:
    """One kind of sensitive text.

    ``hint`` is a cheap pre-check (all of its substrings absent -> skip the
    regex), as is ``digits``; ``validate`` rejects look-alikes the pattern
    cannot tell apart.
    """

    kind: str
    pattern: re.Pattern[str]
    validate: Callable[[re.Match[str]], bool] | None = None
    hint: tuple[str, ...] = ()
    digits: bool = False  # only text with a decimal digit can match


def _d(kind: str, pattern: str, validate: Callable[[re.Match[str]], bool] | None = None,
       hint: tuple[str, ...] = (), digits: bool = False) -> Detector:
    return Detector(kind, re.compile(pattern), validate, hint, digits)


_END = r"(?![A-Za-z0-9_-])"
_DIGIT = re.compile(r"\d")
DEFAULT_DETECTORS: tuple[Detector, ...] = (
    _d("private_key",
       r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?"
       r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
       hint=("PRIVATE KEY",)),
    _d("jwt", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
       + _END, hint=("eyJ",)),
    _d("bearer_token", r"\b[Bb]earer\s+[A-Za-z0-9\-._~+/]{16,}=*", hint=("earer",)),
    _d("anthropic_api_key", r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,}", hint=("sk-ant-",)),
    _d("openai_api_key",
       r"(?<![A-Za-z0-9_-])sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,}|[A-Za-z0-9]{32,})"
       + _END, hint=("sk-",)),
    _d("aws_access_key_id", r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])",
       hint=("AKIA", "ASIA")),
    _d("aws_secret_access_key",
       r"(?i)aws_secret_access_key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}",
       hint=("aws_secret", "AWS_SECRET")),
    _d("github_token",
       r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
       hint=("gh", "github_pat_")),
    _d("slack_token", r"(?<![A-Za-z0-9_-])xox[abposr]-[A-Za-z0-9-]{10,}", hint=("xox",)),
    _d("google_api_key", r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}" + _END, hint=("AIza",)),
    _d("stripe_key", r"(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}",
       hint=("_live_", "_test_")),
    _d("email",
       r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])",
       hint=("@",)),
    # Digit-bearing formats below: each pattern starts with the character it
    # consumes and checks its left boundary with a lookbehind after it, so the
    # regex engine can skip non-candidate positions fast; all need a digit.
    _d("iban", r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
       r"(?![A-Za-z0-9])", _valid_iban, digits=True),
    _d("payment_card", r"\d(?<![\d.-]\d)(?:[ -]?\d){12,18}(?![\d-])", _valid_card, digits=True),
    _d("us_ssn", r"\d(?<![\d-]\d)\d\d(?<!000)(?<!666)(?<!9\d\d)-(?!00)\d{2}-(?!0000)\d{4}"
       r"(?![\d-])", _valid_ssn, hint=("-",), digits=True),
    _d("uk_nino",
       r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9][A-Z])[A-CEGHJ-NPR-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ)"
       r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])", digits=True),
    _d("es_dni", r"[XYZ0-9](?<![A-Za-z0-9][XYZ0-9])\d{7}[A-Z](?![A-Za-z0-9])", _valid_dni,
       digits=True),
    _d("phone",
       r"\+(?<![\w+]\+)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?![\w-])"
       r"|\((?<![\w.+-]\()[2-9]\d{2}\) ?[2-9]\d{2}[-. ]\d{4}(?![\w-])"
       r"|[2-9](?<![\w.+-][2-9])\d{2}[-. ][2-9]\d{2}[-. ]\d{4}(?![\w-])",
       _valid_phone, digits=True),
    _d("ipv4", r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)", _valid_ipv4,
       hint=(".",), digits=True),
    _d("ipv6",
       r"(?:[0-9A-Fa-f](?<![\w:][0-9A-Fa-f])[0-9A-Fa-f]{0,3}:|:(?<![\w:]:))"
       r"(?:[0-9A-Fa-f]{0,4}:){1,6}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])",
       _valid_ipv6, hint=(":",), digits=True),
)


def parse_redaction_table(table: Mapping[str, Any], source: str) -> dict[str, str]:
    """Validate a policy file's ``[redaction]`` table: ``patterns = {name = "regex"}``.

    Returns name -> regex; a bad name or a regex that does not compile is a
    :class:`ConfigError` naming the key, at load time.
    """
    unknown = set(table) - {"patterns"}
    if unknown:
        raise ConfigError(source, f"unknown key(s) {sorted(unknown)}",
                          'the [redaction] table has one key: patterns = {name = "regex"}')
    patterns = table.get("patterns", {})
    if not isinstance(patterns, Mapping):
        raise ConfigError(source, "patterns must be a table of name = \"regex\"")
    compile_patterns(patterns, source)
    return {str(name): str(regex) for name, regex in patterns.items()}


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def compile_patterns(patterns: Mapping[str, Any], source: str) -> list[Detector]:
    detectors = []
    for name, regex in patterns.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(source, f"pattern name {name!r} is not usable",
                              "use letters, digits, '_', '.', '-' (it becomes "
                              "[REDACTED:name])")
        if not isinstance(regex, str) or not regex:
            raise ConfigError(source, f"pattern {name!r} must be a non-empty string")
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise ConfigError(source, f"pattern {name!r} does not compile: {exc}") from exc
        if compiled.search("") is not None:
            raise ConfigError(source, f"pattern {name!r} matches the empty string",
                              "it would redact between every character")
        detectors.append(Detector(name, compiled))
    return detectors


class Redactor:
    """Replaces sensitive text with typed placeholders and counts what it replaced.

    Thread-safe: detectors are immutable; only the running totals take a lock.
    User patterns run after the built-in detectors.
    """

    def __init__(self, patterns: Mapping[str, str] | None = None,
                 detectors: Sequence[Detector] = DEFAULT_DETECTORS) -> None:
        extra = compile_patterns(patterns or {}, "redaction patterns")
        self.detectors: tuple[Detector, ...] = (*detectors, *extra)
        self.totals: Counter[str] = Counter()
        self._lock = threading.Lock()

    def redact(self, text: str) -> tuple[str, int]:
        """The redacted text and the number of replacements."""
        counts: Counter[str] | None = None
        has_digit = _DIGIT.search(text) is not None
        for detector in self.detectors:
            if detector.hint and not any(h in text for h in detector.hint):
                continue
            if detector.digits and not has_digit:
                continue
            replaced = 0

            def substitute(match: re.Match[str], detector: Detector = detector) -> str:
                nonlocal replaced
                if detector.validate is not None and not detector.validate(match):
                    return match.group()
                replaced += 1
                return placeholder(detector.kind)

            new_text = detector.pattern.sub(substitute, text)
            if replaced:
                text = new_text
                if counts is None:
                    counts = Counter()
                counts[detector.kind] += replaced
        if counts is None:
            return text, 0
        with self._lock:
            self.totals.update(counts)
        return text, sum(counts.values())

    def redact_value(self, value: Any) -> tuple[Any, int]:
        """A str, or a sequence of str (OTel array attribute), redacted; other types as is."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
            total = 0
            out = []
            for item in value:
                if isinstance(item, str):
                    item, count = self.redact(item)
                    total += count
                out.append(item)
            return tuple(out), total
        return value, 0

    def redact_attributes(self, attributes: Mapping[str, Any] | None,
                          keys: Callable[[str], bool] = is_content_key
                          ) -> tuple[dict[str, Any], int] | None:
        """Content attributes redacted, or None when there is no content attribute."""
        if not attributes:
            return None
        content = [key for key in attributes if keys(key)]
        if not content:
            return None
        out = dict(attributes)
        total = 0
        for key in content:
            out[key], count = self.redact_value(attributes[key])
            total += count
        return out, total
