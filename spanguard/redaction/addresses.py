"""E-mail and IP addresses.

E-mail: the forms real text contains, not only ASCII ``user@example.com``:
quoted local parts (``"jane doe"@example.com``), internationalised addresses
(RFC 6531: ``josé@exämple.de``, ``用户@例子.中国``), punycode domains
(``xn--bcher-kva.de``) and address literals (``jane@[192.0.2.1]``). The domain
must have a dot and a top-level label of letters, and every label must be
valid IDNA (checked with the standard library's codec), so ``user@localhost``,
``@handle`` and ``a@b`` are left alone. ``git@github.com`` is an address by
form and is redacted: over-redaction is the safe failure.

IP addresses: dotted quads are IPv4 when every octet is 0-255, so a bare
version string such as ``1.2.3.4`` is redacted too, while ``v1.2.3.4`` and
five-part versions are not; IPv6 needs a decimal digit, so ``dead::beef`` and
``std::vector`` are not addresses.
"""

from __future__ import annotations

import ipaddress
import re

from spanguard.redaction.detector import Detector

__all__ = ["ADDRESS_DETECTORS", "EMAIL", "IP_DETECTORS"]

_LOCAL = r"(?:\"[^\"\\\r\n]{1,64}\"|\w[\w.+%'-]{0,63})"
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_TLD = r"(?:[^\W\d_]{2,63}|[Xx][Nn]--[A-Za-z0-9-]{2,59})"
_LITERAL = r"\[(?:(?:\d{1,3}\.){3}\d{1,3}|IPv6:[0-9A-Fa-f:.]{2,45})\]"
_EMAIL = re.compile(
    rf"(?<![\w.%+-]){_LOCAL}@(?:(?:{_LABEL}\.)+{_TLD}|{_LITERAL})(?![\w-]|\.[^\W_])")


def _valid_email(match: re.Match[str]) -> bool:
    address = match.group()
    local, _, domain = address.rpartition("@")
    if not local.startswith('"') and (local.endswith(".") or ".." in local):
        return False
    if domain.startswith("["):
        return True
    if len(domain) > 253:
        return False
    for label in domain.split("."):
        if label.startswith("-") or label.endswith("-"):
            return False
        if not label.isascii():
            try:
                label.encode("idna")
            except UnicodeError:
                return False
    return True


EMAIL = Detector("email", _EMAIL, _valid_email, hint=("@",))


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


# IPv6 first: an IPv4-mapped address (::ffff:192.0.2.1) is named for its whole form.
IP_DETECTORS: tuple[Detector, ...] = (
    Detector("ipv6", re.compile(
        r"(?:[0-9A-Fa-f](?<![\w:][0-9A-Fa-f])[0-9A-Fa-f]{0,3}:|:(?<![\w:]:))"
        r"(?:[0-9A-Fa-f]{0,4}:){1,6}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"),
        _valid_ipv6, hint=(":",), digits=True),
    Detector("ipv4", re.compile(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)"),
             _valid_ipv4, hint=(".",), digits=True),
)

ADDRESS_DETECTORS: tuple[Detector, ...] = (EMAIL, *IP_DETECTORS)
