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
  the prefix) is not. North American numbers are taken with or without
  separators (``4155550100``), since their plan (area code and exchange may not
  start with 0 or 1) already rejects most ids and Unix timestamps;
- date shapes (``01.02.2024``, ``2024-01-15``) are never phones.

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

_CANDIDATE = re.compile(
    r"(?<![\w+.@/-])(?:\+ ?|00 ?)?(?:\(\d{1,5}\) ?)?\d+"
    r"(?:(?:[ .\-/] ?\(\d{1,5}\) ?|[ .\-/]|\) ?)\d+)*(?![\w@])")
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


def _validator(regions: tuple[str, ...]) -> Callable[[str], bool]:
    def valid(raw: str) -> bool:
        pn = _phonenumbers()
        digits = sum(ch.isdigit() for ch in raw)
        if raw[0] == "+" or raw.startswith("00"):
            if not 8 <= digits <= 17:
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
            if prefix and first == prefix and digits >= 8 and _is_valid(pn, raw, region):
                return True
        return False
    return valid


def _is_valid(pn: ModuleType, raw: str, region: str | None) -> bool:
    try:
        return bool(pn.is_valid_number(pn.parse(raw, region)))
    except pn.NumberParseException:
        return False


_GROUP = re.compile(r"[\s.\-/()]+")


def _locator(regions: tuple[str, ...]) -> Callable[[re.Match[str]], Iterator[Span]]:
    """The whole candidate when it is a valid number; else its longest valid run of groups.

    "Room 12 020 7946 0958" is one candidate; the phone is its last three groups.
    """
    valid = _validator(regions)

    def locate(match: re.Match[str]) -> Iterator[Span]:
        text, base = match.group(), match.start()
        if valid(text):
            yield base, match.end()
            return
        cuts = [0] + [m.end() for m in _GROUP.finditer(text) if m.end() < len(text)]
        if len(cuts) > 8:  # a long table of numbers: judge it whole, not every window
            return
        ends = [m.start() for m in _GROUP.finditer(text) if m.start() > 0] + [len(text)]
        i = 0
        while i < len(cuts):
            start = cuts[i]
            found = next((end for end in reversed(ends) if end > start
                          and (start, end) != (0, len(text)) and valid(text[start:end])), None)
            if found is None:
                i += 1
                continue
            yield base + start, base + found
            while i < len(cuts) and cuts[i] < found:
                i += 1
    return locate


def phone_detector(regions: Sequence[str] | None = None) -> Detector:
    """A detector for phone numbers valid internationally or in one of ``regions``.

    ``None`` means :data:`DEFAULT_PHONE_REGIONS` (not checked, so building the
    default detector does not import phonenumbers).
    """
    checked = (DEFAULT_PHONE_REGIONS if regions is None
               else check_regions(regions, "phone regions"))
    return Detector("phone", _CANDIDATE, locate=_locator(checked), digits=True)
