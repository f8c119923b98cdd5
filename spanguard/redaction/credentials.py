"""Credentials: provider keys, tokens, key-value secrets, private keys.

The built-in rules cover the providers an agent's tools meet most and the
forms a person pastes: provider-prefixed keys (each with its length and
charset, so ``sk-learn-...`` or ``task-...`` are not keys), AWS secret access
keys alone or under any key name (40 base64 characters, mixed case and a
digit, high entropy: a SHA-1 in hex is none of those), ``Bearer``/``BEARER``
tokens, HTTP Basic credentials (the header, whose base64 must decode to
``user:password``, and ``scheme://user:password@host``), and values assigned
to names such as ``password``, ``client_secret`` or ``api_key`` in JSON,
``key=value`` or ``key: "value"`` form. Where a key name shows, only the value
is replaced, so ``"SecretAccessKey": "[REDACTED:aws_secret_access_key]"``
still reads.

With the ``secrets`` extra (``pip install 'spanguard[secrets]'``), the rules
Yelp's ``detect-secrets`` maintains are added on top
(:mod:`spanguard.redaction.detect_secrets`); these built-in rules are the
fallback when it is not installed.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator

from spanguard.redaction.detector import Detector, Span

__all__ = ["SECRET_DETECTORS"]

_END = r"(?![A-Za-z0-9_-])"


def _entropy(text: str) -> float:
    counts = Counter(text)
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


def _random_looking(text: str, *, min_entropy: float) -> bool:
    return (any(c.isupper() for c in text) and any(c.islower() for c in text)
            and any(c.isdigit() for c in text) and _entropy(text) >= min_entropy)


def _aws_secret(match: re.Match[str]) -> bool:
    return _random_looking(match.group(), min_entropy=4.0)


def _bearer(match: re.Match[str]) -> bool:
    token = match.group("token")
    has_mixed_case = any(c.isupper() for c in token) and any(c.islower() for c in token)
    return any(c.isdigit() for c in token) or (has_mixed_case and len(token) >= 20)


def _basic_header(match: re.Match[str]) -> bool:
    try:
        decoded = base64.b64decode(match.group("credential"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


_SECRET_NAMES = (r"(?:[A-Za-z0-9]+[_.-]?)?(?:pass(?:word|wd|phrase)?|pwd|secret(?:[_.-]?key)?"
                 r"|secret[_.-]?access[_.-]?key|client[_.-]?secret|api[_.-]?key|apikey"
                 r"|access[_.-]?token|auth[_.-]?token|refresh[_.-]?token|private[_.-]?key"
                 r"|credentials?)")
# Template placeholders and empty-ish values are not secrets.
_NOT_PLACEHOLDER = (r"(?!\$\{|\$[A-Z_]|<[A-Za-z_]|\{\{|%[sd(]|\*{3}|\[REDACTED"
                    r"|(?:none|null|true|false|undefined)\b)")
_VALUE_GROUPS = ("dq", "sq", "bare")


def _credential_value(match: re.Match[str]) -> Iterator[Span]:
    for name in _VALUE_GROUPS:
        start, end = match.span(name)
        if start >= 0:
            yield start, end
            return


def _d(kind: str, pattern: str, *, hint: tuple[str, ...], flags: int = 0,
       validate: Callable[[re.Match[str]], bool] | None = None,
       group: int | str = 0) -> Detector:
    return Detector(kind, re.compile(pattern, flags), validate, hint, group=group)


SECRET_DETECTORS: tuple[Detector, ...] = (
    _d("private_key",
       r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
       r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
       hint=("private key",)),
    _d("jwt", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
       + _END, hint=("eyj",)),
    _d("bearer_token", r"\bbearer\s+(?P<token>[A-Za-z0-9\-._~+/]{16,}=*)",
       hint=("bearer",), flags=re.IGNORECASE, validate=_bearer, group="token"),
    _d("basic_auth", r"\bbasic\s+(?P<credential>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])",
       hint=("basic",), flags=re.IGNORECASE, validate=_basic_header, group="credential"),
    _d("basic_auth", r"\b[a-z][a-z0-9+.-]*://(?P<credential>[^\s:/?#@\[\]]+:[^\s/?#@]+)@",
       hint=("://",), flags=re.IGNORECASE, group="credential"),
    _d("anthropic_api_key", r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,}", hint=("sk-ant-",)),
    _d("openai_api_key",
       r"(?<![A-Za-z0-9_-])sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,}|[A-Za-z0-9]{32,})"
       + _END, hint=("sk-",)),
    _d("aws_access_key_id",
       r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[0-9A-Z]{16}(?![A-Z0-9])",
       hint=("akia", "asia", "abia", "acca", "a3t")),
    _d("github_token",
       r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
       hint=("gh", "github_pat_")),
    _d("gitlab_token", r"(?<![A-Za-z0-9_-])gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt)-[A-Za-z0-9_-]{20,}",
       hint=("gl",)),
    _d("slack_token", r"(?<![A-Za-z0-9_-])xox[abposr]-[A-Za-z0-9-]{10,}", hint=("xox",)),
    _d("slack_webhook", r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/"
       r"[A-Za-z0-9_]+", hint=("hooks.slack.com",)),
    _d("google_api_key", r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}" + _END, hint=("aiza",)),
    _d("stripe_key", r"(?<![A-Za-z0-9_])(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}",
       hint=("_live_", "_test_")),
    _d("huggingface_token", r"(?<![A-Za-z0-9_-])hf_[A-Za-z0-9]{30,}" + _END, hint=("hf_",)),
    _d("npm_token", r"(?<![A-Za-z0-9_-])npm_[A-Za-z0-9]{36}" + _END, hint=("npm_",)),
    _d("pypi_token", r"(?<![A-Za-z0-9_-])pypi-AgE[A-Za-z0-9_-]{50,}", hint=("pypi-",)),
    _d("sendgrid_key", r"(?<![A-Za-z0-9_-])SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}" + _END,
       hint=("sg.",)),
    # Generic rules last, so a provider's key is named for its provider.
    _d("aws_secret_access_key",
       r"[A-Za-z0-9/+](?<![A-Za-z0-9/+].)[A-Za-z0-9/+]{39}(?![A-Za-z0-9/+=])", hint=(),
       validate=_aws_secret),
    # JSON / YAML / code: `"password": "..."`, `secret: '...'`; env and query strings:
    # `PASSWORD=...` (a bare value only after `=`, so "Password: Please enter" is prose).
    Detector("credential", re.compile(
        rf"(?<![A-Za-z0-9])[\"']?{_SECRET_NAMES}[\"']?\s*(?:"
        rf"(?:=|:=|:|=>)\s*(?:\"(?P<dq>{_NOT_PLACEHOLDER}[^\"\\\r\n]{{4,200}})\""
        rf"|'(?P<sq>{_NOT_PLACEHOLDER}[^'\\\r\n]{{4,200}})')"
        rf"|=\s*(?P<bare>{_NOT_PLACEHOLDER}[^\s\"',;&(){{}}\[\]<>]{{6,}})"
        rf"(?=[\s\"',;&)}}\]>]|$))", re.IGNORECASE),
        hint=("pass", "pwd", "secret", "key", "token", "credential"),
        locate=_credential_value),
)
