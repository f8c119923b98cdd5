"""Phone numbers, validated against libphonenumber's numbering plans (``phonenumbers``).

A candidate is a run of digit groups with the separators people write
(space, ``-``, ``.``, ``/``, parentheses, a ``+`` or ``00`` international
prefix). Validity, not shape, decides:

- ``+CC ...`` and ``00CC ...``: valid in the region the country code names,
  for every region libphonenumber knows;
- national format: valid in one of ``regions`` (default
  :data:`DEFAULT_PHONE_REGIONS`). Outside North America a national number must
  start with the region's trunk prefix (``0``), so ``020 7946 0958`` (UK),
  ``030 123456`` (DE), ``01 23 45 67 89`` (FR) and ``03-1234-5678`` (JP) are
  phones, while a date such as ``2024-01-15`` (valid digits in Germany without
  the prefix) is not. Regions without a trunk prefix (ES, IT, DK, ...) are not
  in the default list, as their numbers look like any digit groups; list them
  to have their national format recognised (``912 34 56 78`` with ``ES``).
  North American numbers need no prefix: their plan (area code and exchange
  may not start with 0 or 1) already rejects most ids and Unix timestamps;
- a bare digit run (``4155550100``) is a phone only after a phone word
  ("call", "phone", "tel", "mobile", ``"phone":``, "#" ... within 32
  characters): without one it is an id (a PO or order number) far more often;
- dotted numbers need a phone's grouping (``415.555.0100``,
  ``01.23.45.67.89``) or a trunk prefix (``030.123456``): ``12.39.6885.152``
  is a build number;
- date shapes (``01.02.2024``, ``2024-01-15``) are never phones, and a
  candidate is split only at spaces ("Room 12 020 7946 0958"), never at a
  ``-`` or ``.`` that glues digits into one id (``423-9328489-5474461``).

Numbers in national format from a region not listed are missed; list the
regions your users write from (``configure(redaction_phone_regions=...)``).
Validation costs ~30 µs per candidate and region, on the exporter thread; text
without a phone-shaped candidate costs one regex scan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from types import ModuleType

from spanguard.errors import ConfigError
from spanguard.redaction.detector import Detector, Span

__all__ = ["DEFAULT_PHONE_REGIONS", "phone_detector"]

DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "JP", "NL", "BE", "AT", "CH", "IE", "SE", "AU", "IN", "BR")
"""National formats recognised by default ("US" covers the whole North American plan)."""

# Starts with the character it consumes (a fast set scan), then checks the left boundary.
_CANDIDATE = re.compile(
    r"[+(\d](?<![\w+.@/:-].)"
    r"(?:(?<=\+) ?(?:\(\d{1,5}\) ?)?\d+|(?<=\()\d{1,5}\) ?\d+|(?<=\d)\d*)"
    r"(?:(?:[ .\-/] ?\(\d{1,5}\) ?|[ .\-/]|\) ?)\d+)*(?![\w@:])")
_DATE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}|\d{4}([./-])\d{1,2}")
_NANP = frozenset({"US", "CA"})


@cache
def _phonenumbers() -> ModuleType:
    import phonenumbers

    return phonenumbers


def check_regions(regions: Sequence[str], source: str) -> tuple[str, ...]:
    """Upper-cased region codes; an unknown one is a :class:`ConfigError` naming it."""
    known = _phonenumbers().SUPPORTED_REGIONS
    out = tuple(str(region).upper() for region in regions)
    unknown = [region for region in out if region not in known]
    if unknown:
        raise ConfigError(source, f"unknown phone region(s) {unknown}",
                          "use ISO 3166 alpha-2 codes such as 'GB', 'DE', 'JP'")
    return out


_PHONE_WORDS = re.compile(
    r"(?i)(?:phone|tel|call|cell|mobile|mob\b|fax|sms|text|whatsapp|signal|contact|dial|ring"
    r"|reach|number|nummer|num[ée]ro|t[ée]l[ée]phone|telefon|handy|m[óo]vil|celular|電話"
    r"|ph\b|#)")
_RUN = re.compile(r"\d+")
_DOTTED_SHAPES = frozenset({(3, 3, 4), (1, 3, 3, 4), (2, 2, 2, 2, 2)})


def _plausible(raw: str, context: str) -> bool:
    """Shapes that are written as phone numbers, before asking libphonenumber.

    A bare digit run needs a phone word shortly before it ("call 4155550100"):
    without one it is an id far more often. Dotted numbers must have a phone's
    grouping (415.555.0100, 01.23.45.67.89) or start with a trunk prefix
    (030.123456), since 12.39.6885.152 is a build number. No phone ends in a
    one-digit group (0-306-40615-2 is an ISBN), and a national number's first
    group (trunk prefix and area code) has at most 6 digits.
    """
    if raw.isdigit():
        return _PHONE_WORDS.search(context) is not None
    runs = _RUN.findall(raw)
    if len(runs[-1]) < 2:  # 0-306-40615-2 is an ISBN: phones end in a group
        return False
    if raw[0] == "0" and not raw.startswith("00") and len(runs[0]) > 6:
        return False  # trunk prefix and area code: at most 6 digits (India writes 074104)
    if "." in raw and not any(sep in raw for sep in " -/()"):
        groups = tuple(len(run) for run in _RUN.findall(raw))
        return groups in _DOTTED_SHAPES or (raw[0] == "0" and groups[0] >= 2)
    return True


def _validator(regions: tuple[str, ...]) -> Callable[[str], bool]:
    def valid(raw: str) -> bool:
        pn = _phonenumbers()
        digits = sum(ch.isdigit() for ch in raw)
        if raw[0] == "+" or raw.startswith("00"):
            if not 7 <= digits <= 17 or raw.startswith("000"):  # no country code starts with 0
                return False
            number = "+" + raw[2:] if raw[0] == "0" else raw
            return _is_valid(pn, number, None)
        if not 7 <= digits <= 15 or _DATE.fullmatch(raw):
            return False
        first = raw.lstrip("(")[0]
        for region in regions:
            if region in _NANP:
                nanp_shape = (digits == 10 and first not in "01") or (digits == 11 and first == "1")
                if nanp_shape and _is_valid(pn, raw, region):
                    return True
                continue
            prefix = pn.PhoneMetadata.metadata_for_region(region).national_prefix
            # the trunk prefix, or an area code in parentheses: "(11) 2345-6789" (BR);
            # a region without a trunk prefix (ES, IT) accepts its numbers as written
            trunk = not prefix or first == prefix or raw[0] == "("
            if trunk and digits >= 8 and _is_valid(pn, raw, region):
                return True
        return False
    return valid


def _is_valid(pn: ModuleType, raw: str, region: str | None) -> bool:
    try:
        return bool(pn.is_valid_number(pn.parse(raw, region)))
    except pn.NumberParseException:
        return False


_SPACES = re.compile(r"\s+")
_STRAY = 3  # digits in a group that may stand beside a phone number without being part of it


def _locator(regions: tuple[str, ...]) -> Callable[[re.Match[str]], Iterator[Span]]:
    """The whole candidate when it is a valid number; else its longest valid run of groups.

    "Room 12 020 7946 0958" is one candidate; the phone is its last three
    groups. Candidates are split only at spaces: digits glued with "-" or "."
    belong together (423-9328489-5474461 is an order number, not a phone
    followed by a suffix).
    """
    valid = _validator(regions)

    def phone(match: re.Match[str], start: int, end: int) -> bool:
        raw = match.string[start:end]
        return _plausible(raw, match.string[max(0, start - 32):start]) and valid(raw)

    def locate(match: re.Match[str]) -> Iterator[Span]:
        text, base = match.group(), match.start()
        if len(text) < 7:  # fewer than 7 digits: the common case in numeric text, cheaply
            return
        if phone(match, base, match.end()):
            yield base, match.end()
            return
        gaps = list(_SPACES.finditer(text))
        if not gaps or len(gaps) > 7:  # a long table of numbers: judge it whole only
            return
        starts = [0] + [gap.end() for gap in gaps]
        stops = [gap.start() for gap in gaps] + [len(text)]
        short = [sum(ch.isdigit() for ch in text[a:b]) <= _STRAY for a, b in zip(starts, stops,
                                                                              strict=True)]
        # drop only short stray groups around the number ("Room 12", a trailing "x 2"),
        # never a long one: "3600 0110 0000 06" is one number, not a phone after "3600"
        for i in range(len(starts)):
            if i and not short[i - 1]:
                break
            for j in range(len(stops) - 1, i - 1, -1):
                if (i, j) != (0, len(stops) - 1) and phone(match, base + starts[i],
                                                           base + stops[j]):
                    yield base + starts[i], base + stops[j]
                    return
                if not short[j]:
                    break
    return locate


def phone_detector(regions: Sequence[str] | None = None) -> Detector:
    """A detector for phone numbers valid internationally or in one of ``regions``.

    ``None`` means :data:`DEFAULT_PHONE_REGIONS` (not checked, so building the
    default detector does not import phonenumbers).
    """
    checked = (DEFAULT_PHONE_REGIONS if regions is None
               else check_regions(regions, "phone regions"))
    return Detector("phone", _CANDIDATE, locate=_locator(checked), digits=True)
