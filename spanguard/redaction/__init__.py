"""Redaction of prompts, completions, tool payloads and retrieved text.

Content capture is opt-in; when it is on, the text still passes through here
before any span leaves the process (see :mod:`spanguard.exporters.redacting`).
Detectors are built on the field's own libraries where they exist:
libphonenumber's numbering plans (``phonenumbers``) for phone numbers,
``python-stdnum`` for cards, IBANs, VAT numbers and national ids, plus a
secrets ruleset (built in; Yelp's ``detect-secrets`` on top with the
``secrets`` extra) and an optional model-based recognizer for names and street
addresses (Presidio, ``ner`` extra). A match is replaced by a typed placeholder
(``[REDACTED:email]``) so the redacted text still reads, and every replacement
is counted so a redaction rate can be computed.

Redaction is a layer, not a guarantee (seed 004): it misses formats no
detector knows. Keep content capture off where that is not acceptable.
Modules: :mod:`.content` (which attributes), :mod:`.detector` (the detector
type), :mod:`.credentials`, :mod:`.addresses`, :mod:`.numbers`, :mod:`.phones`,
:mod:`.redactor` (the engine), :mod:`.settings` (the policy table),
:mod:`.ner` and :mod:`.detect_secrets_rules` (the extras).
"""

from spanguard.redaction.content import CONTENT_ATTRIBUTES, CONTENT_PREFIXES, is_content_key
from spanguard.redaction.detector import Detector, compile_patterns, placeholder
from spanguard.redaction.numbers import luhn_valid
from spanguard.redaction.phones import DEFAULT_PHONE_REGIONS
from spanguard.redaction.redactor import (
    DEFAULT_DETECTORS,
    EntityRecognizer,
    Redactor,
    default_detectors,
)
from spanguard.redaction.settings import RedactionSettings, parse_redaction_table

__all__ = [
    "CONTENT_ATTRIBUTES",
    "CONTENT_PREFIXES",
    "DEFAULT_DETECTORS",
    "DEFAULT_PHONE_REGIONS",
    "Detector",
    "EntityRecognizer",
    "RedactionSettings",
    "Redactor",
    "compile_patterns",
    "default_detectors",
    "is_content_key",
    "luhn_valid",
    "parse_redaction_table",
    "placeholder",
]
