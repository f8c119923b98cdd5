"""The policy file's ``[redaction]`` table, validated once, at load time.

```toml
[redaction]
patterns = { order_id = "ORD-[0-9]{6}" }   # extra detectors, after the built-in ones
phone_regions = ["GB", "DE", "FR"]          # national formats to recognise (default: a list)
detect_secrets = true                       # detect-secrets' rules (default: when installed)
ner_model = "en_core_web_lg"                # Presidio names/addresses (ner extra; off)
```

Every problem is a :class:`ConfigError` naming the key; the core reads only
this table of the policy file (guardrails' ``Policy`` validates it with the
same function).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spanguard.errors import ConfigError
from spanguard.redaction.detector import compile_patterns

__all__ = ["RedactionSettings", "parse_redaction_settings", "parse_redaction_table"]

_KEYS = ("patterns", "phone_regions", "detect_secrets", "ner_model")


@dataclass(frozen=True)
class RedactionSettings:
    """What a ``[redaction]`` table asks for; ``None`` leaves the default."""

    patterns: Mapping[str, str] = field(default_factory=dict)
    phone_regions: tuple[str, ...] | None = None
    detect_secrets: bool | None = None
    ner_model: str | None = None


def parse_redaction_settings(table: Mapping[str, Any], source: str) -> RedactionSettings:
    unknown = set(table) - set(_KEYS)
    if unknown:
        raise ConfigError(source, f"unknown key(s) {sorted(unknown)}",
                          f"the [redaction] table takes {', '.join(_KEYS)}")
    patterns = table.get("patterns", {})
    if not isinstance(patterns, Mapping):
        raise ConfigError(source, "patterns must be a table of name = \"regex\"")
    compile_patterns(patterns, source)
    regions = table.get("phone_regions")
    if regions is not None:
        if isinstance(regions, str) or not isinstance(regions, Sequence) or not all(
                isinstance(region, str) for region in regions):
            raise ConfigError(source, "phone_regions must be a list of region codes",
                              'e.g. phone_regions = ["GB", "DE"]')
        from spanguard.redaction.phones import check_regions

        regions = check_regions(regions, f"{source} phone_regions")
    detect_secrets = table.get("detect_secrets")
    if detect_secrets is not None and not isinstance(detect_secrets, bool):
        raise ConfigError(source, "detect_secrets must be true or false")
    ner_model = table.get("ner_model")
    if ner_model is not None and (not isinstance(ner_model, str) or not ner_model):
        raise ConfigError(source, "ner_model must be a spaCy model name or path",
                          'e.g. ner_model = "en_core_web_lg"')
    return RedactionSettings(patterns={str(k): str(v) for k, v in patterns.items()},
                             phone_regions=regions, detect_secrets=detect_secrets,
                             ner_model=ner_model)


def parse_redaction_table(table: Mapping[str, Any], source: str) -> dict[str, str]:
    """Validate the whole table; return its ``patterns`` (name -> regex).

    Kept for guardrails' ``Policy.redaction_patterns``: the other keys are
    validated here too, so a bad policy file fails the same way everywhere.
    """
    return dict(parse_redaction_settings(table, source).patterns)
