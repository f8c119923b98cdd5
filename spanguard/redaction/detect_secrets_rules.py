"""Yelp's detect-secrets rules as a recognizer (the ``secrets`` extra).

detect-secrets maintains regular expressions for ~25 credential formats
(Artifactory, Azure storage keys, Cloudant, Discord, IBM Cloud, Mailchimp,
SoftLayer, Square, Telegram, Twilio, ...). Its plugins are built to scan
source lines and return the captured *value*, which for some rules is only a
prefix group (GitLab's yields ``glpat``); so this adapter runs each regex
plugin's compiled ``denylist`` over the text and redacts the whole match (a
superset of the secret: over-redaction is the safe failure). Left out: the
public-IP plugin (spanguard's ``ipv4`` detector covers every address) and the
entropy and keyword plugins, which are heuristics for quoted strings in code
and flag hashes and ids in prose (the built-in ``credential`` rule covers
``password = "..."`` forms).

Why an extra and not a core dependency: detect-secrets pulls ``requests`` and
``PyYAML`` into the process and costs ~1-1.5 ms more per 2 KB of text (measured
by ``benchmarks/redaction_quality.py``), while spanguard's built-in rules
(:mod:`.credentials`) already cover the common providers and are the
documented fallback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from spanguard.errors import ConfigError

__all__ = ["DetectSecretsRules"]

_EXCLUDED = frozenset({"IPPublicDetector"})
_SLUG = re.compile(r"[^a-z0-9]+")


def _kind(secret_type: str) -> str:
    return _SLUG.sub("_", secret_type.lower()).strip("_")


class DetectSecretsRules:
    """Every regex rule of the installed detect-secrets, as (start, end, kind) finder."""

    def __init__(self) -> None:
        try:
            from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
            from detect_secrets.plugins.base import RegexBasedDetector
        except ImportError as exc:
            raise ConfigError("redaction detect_secrets",
                              f"detect-secrets is not installed ({exc})",
                              "pip install 'spanguard[secrets]', or leave detect_secrets off "
                              "(the built-in secret rules still apply)") from exc
        rules: list[tuple[re.Pattern[str], str]] = []
        plugins: dict[str, Any] = get_mapping_from_secret_type_to_class()
        for secret_type, plugin in sorted(plugins.items()):
            if not issubclass(plugin, RegexBasedDetector) or plugin.__name__ in _EXCLUDED:
                continue
            denylist: Any = plugin.denylist
            rules.extend((pattern, _kind(secret_type)) for pattern in denylist)
        self.rules: tuple[tuple[re.Pattern[str], str], ...] = tuple(rules)

    def find(self, text: str) -> Iterator[tuple[int, int, str]]:
        for pattern, kind in self.rules:
            for match in pattern.finditer(text):
                start, end = match.span()
                if start < end:
                    yield start, end, kind
