"""Checksummed numbers, validated by python-stdnum: cards, IBANs, VAT and national ids.

The patterns only find candidates; python-stdnum decides, with each format's
own rules (Luhn, ISO 7064 mod-97, the check letters of a DNI or a codice
fiscale, the SSA's never-issued ranges). That discipline is what keeps order
ids, invoice numbers and timestamps out of the redacted set.

Written forms accepted (the tests pin each): cards with single or double
spaces, dashes or dots between the usual groups (4-4-4-4, 4-6-5, 4-6-4, or
no separator); IBANs in any letter case, spaced or dashed; EU and UK VAT
numbers with their country prefix; US SSNs with dashes or spaces; UK NINOs;
Spanish DNI/NIE; French NIR; Italian codice fiscale; Brazilian CPF
(``123.456.789-09``); Indian Aadhaar (``2345 6789 0124``). A bare run of nine
digits is never taken for an SSN: it is an id far more often.

stdnum modules are imported on first use (on the exporter thread), not when
spanguard is imported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import cache
from types import ModuleType

from spanguard.redaction.detector import Detector, Span

__all__ = ["NUMBER_DETECTORS", "luhn_valid"]


@cache
def _stdnum(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"stdnum.{name}")


def luhn_valid(number: str) -> bool:
    return bool(_stdnum("luhn").is_valid(number))


# --- payment cards -------------------------------------------------------------------
# Issuer prefixes (IIN ranges) of Visa, Mastercard (51-55, 2221-2720), Amex, Diners,
# Discover, UnionPay and JCB: a Luhn-valid number outside them is an id, not a card.
_CARD_PREFIX = re.compile(
    r"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|3(?:0[0-5]|[68])"
    r"|6(?:011|5|4[4-9]|2)|35(?:2[89]|[3-8]\d)")
_DIGIT_RUN = re.compile(r"\d+")
_CARD_LAYOUTS = frozenset({(4, 6, 5), (4, 6, 4)})


def _card_layout(lengths: tuple[int, ...]) -> bool:
    if len(lengths) == 1 or lengths in _CARD_LAYOUTS:
        return True
    return len(lengths) >= 3 and all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4


def _card_spans(match: re.Match[str]) -> Iterator[Span]:
    """Card numbers inside a run of digit groups ("ref 12 4111 1111 1111 1111" has one).

    A window of consecutive groups is a card when it uses one separator
    throughout, has a card layout, 13-19 digits, an issuer prefix and a valid
    Luhn sum; the longest such window from each start wins.
    """
    text, base = match.group(), match.start()
    if len(text) < 13:  # too short for any card: most digit runs, cheaply
        return
    groups = [m.span() for m in _DIGIT_RUN.finditer(text)]
    i = 0
    while i < len(groups):
        found = None
        separator = None
        for j in range(i, len(groups)):
            if j > i:
                sep = text[groups[j - 1][1]:groups[j][0]]
                if separator is None:
                    separator = sep
                elif sep != separator:
                    break
            window = groups[i:j + 1]
            digits = "".join(text[a:b] for a, b in window)
            if len(digits) > 19:
                break
            if (len(digits) >= 13 and _card_layout(tuple(b - a for a, b in window))
                    and _CARD_PREFIX.match(digits) and luhn_valid(digits)):
                found = j
        if found is None:
            i += 1
            continue
        yield base + groups[i][0], base + groups[found][1]
        i = found + 1


# --- IBAN and VAT: a country prefix, then a body that may run into the next words ----------
_SEPARATORS = re.compile(r"[ .-]+")


def _prefix_spans(valid: Callable[[str], bool], min_len: int, max_len: int, back: int = 0
                  ) -> Callable[[re.Match[str]], Iterator[Span]]:
    """The longest prefix of the candidate, ending at a separator, that ``valid`` accepts.

    "DE89 3704 0044 0532 0130 00 please" is one candidate (lower-case IBANs
    exist, so the pattern cannot stop at the first word); its valid prefix
    ends after "00". ``back``: characters before the match that belong to the
    candidate (a pattern that starts at the first digit, for speed).
    """
    def locate(match: re.Match[str]) -> Iterator[Span]:
        begin = match.start() - back
        text = match.string[begin:match.end()]
        ends = [m.start() for m in _SEPARATORS.finditer(text)]
        after = match.string[match.end():match.end() + 1]
        if not after.isalnum():  # the pattern stopped at a boundary, not at its length cap
            ends.append(len(text))
        for end in reversed(ends):
            candidate = _SEPARATORS.sub("", text[:end])
            if min_len <= len(candidate) <= max_len and valid(candidate):
                yield begin, begin + end
                return
    return locate


def _iban_valid(candidate: str) -> bool:
    return bool(_stdnum("iban").is_valid(candidate))


_VAT_COUNTRIES = ("AT|BE|BG|CY|CZ|DE|DK|EE|EL|GR|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT"
                  "|RO|SE|SI|SK|XI|GB")


def _vat_valid(candidate: str) -> bool:
    module = "gb.vat" if candidate[:2].upper() == "GB" else "eu.vat"
    return bool(_stdnum(module).is_valid(candidate))


# --- national ids --------------------------------------------------------------------------
def _stdnum_check(module: str, normalize: Callable[[str], str] = str.upper
                  ) -> Callable[[re.Match[str]], bool]:
    def validate(match: re.Match[str]) -> bool:
        return bool(_stdnum(module).is_valid(normalize(match.group())))
    return validate


def _behind(back: int, module: str) -> Callable[[re.Match[str]], Iterator[Span]]:
    """Validate the match plus ``back`` characters before it (a pattern anchored later)."""
    def locate(match: re.Match[str]) -> Iterator[Span]:
        begin = match.start() - back
        if _stdnum(module).is_valid(match.string[begin:match.end()].upper()):
            yield begin, match.end()
    return locate


def _valid_dni_or_nie(match: re.Match[str]) -> bool:
    text = match.group().upper().replace("-", "")
    return bool(_stdnum("es.nie" if text[0] in "XYZ" else "es.dni").is_valid(text))


def _ssn_dashed(text: str) -> str:
    return text.replace(" ", "-")


_E = r"(?![\w-])"  # right boundary: not inside a word, an id or a dashed number
# Not carved out of a longer run of digit groups ("+992 372 12 3456" is a phone number).
_END_RUN = r"(?![ -]\d)"
_OMO = "[0-9LMNP-V]"  # codice fiscale digits, or the letters that replace them (omocodia)

# Every pattern starts with the character it consumes and checks its left boundary
# with a lookbehind after it: the regex engine then skips non-candidate positions
# with a fast character-set scan (a leading lookbehind would be tried everywhere).
NUMBER_DETECTORS: tuple[Detector, ...] = (
    # starts at the check digits (digits are rarer than letters), the country code behind
    Detector("iban", re.compile(
        r"\d(?<=[A-Za-z]{2}\d)(?<![\w-][A-Za-z]{2}\d)\d(?:[ -]?[A-Za-z0-9]){11,40}"),
        locate=_prefix_spans(_iban_valid, 15, 34, back=2), digits=True),
    Detector("payment_card", re.compile(
        r"\d(?<![\w.,+-]\d)\d*(?:(?:  ?|[.-])\d+)*(?![\w+])"), locate=_card_spans,
        digits=True),
    Detector("vat_number", re.compile(
        f"(?:{_VAT_COUNTRIES})" + r"(?<![\w-]..)[ -]?[0-9A-Z](?:[ .-]?[0-9A-Z]){7,14}"),
        locate=_prefix_spans(_vat_valid, 10, 16), digits=True),
    Detector("us_ssn", re.compile(
        r"\d(?<![\w+-]\d)(?<![\d+][ -]\d)\d{2}([ -])\d{2}\1\d{4}" + _E + _END_RUN),
        _stdnum_check("us.ssn", _ssn_dashed), digits=True),
    Detector("uk_nino", re.compile(
        r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9][A-Z])[A-CEGHJ-NPR-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ)"
        r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"), digits=True),
    Detector("es_dni", re.compile(r"[XYZ\d](?<![\w-][XYZ\d])\d{6,8}-?[A-Z]" + _E),
             _valid_dni_or_nie, digits=True),
    Detector("fr_nir", re.compile(
        r"[12](?<![\w-][12]) ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}" + _E),
        _stdnum_check("fr.nir", lambda s: s.replace(" ", "").upper()), digits=True),
    # starts at the year's first digit, the six letters of the name behind it
    Detector("it_codice_fiscale", re.compile(
        r"\d(?<=[A-Za-z]{6}\d)(?<![\w-][A-Za-z]{6}\d)"
        f"{_OMO}[A-Za-z]{_OMO}{{2}}[A-Za-z]{_OMO}{{3}}[A-Za-z]" + _E, re.IGNORECASE),
        locate=_behind(6, "it.codicefiscale"), digits=True),
    Detector("br_cpf", re.compile(r"\d(?<![\w.-]\d)\d\d\.\d{3}\.\d{3}-\d{2}" + _E),
             _stdnum_check("br.cpf"), digits=True),
    Detector("in_aadhaar", re.compile(
        r"[2-9](?<![\w+-][2-9])(?<![\d+][ -][2-9])\d{3}([ -])\d{4}\1\d{4}" + _E + _END_RUN),
        _stdnum_check("in_.aadhaar"), digits=True),
)
