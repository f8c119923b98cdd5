"""Opaque correlation ids that travel with every MCP request, as W3C baggage.

The MCP SDK already calls ``opentelemetry.propagate.inject`` on each outgoing
request's ``params._meta``; with the default propagators that writes both
``traceparent`` and ``baggage``. So the client side needs no hook into the
session at all: :func:`correlation` puts *keyed hashes* of the session, user
and tenant ids into the current OTel baggage, and every MCP request sent inside
the block carries them. Raw ids never enter the context, so they cannot leak
into ``_meta`` or into any other instrumented transport.

On the server, :func:`correlation_from_meta` reads them back, and accepts only
values shaped like :class:`~spanguard.hashing.KeyedHasher` output: a peer that
put a raw e-mail address under our keys is ignored, not recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context

from spanguard import semconv as sc
from spanguard.hashing import KeyedHasher

__all__ = [
    "BAGGAGE_KEYS",
    "Correlation",
    "correlation",
    "correlation_from_meta",
    "parent_from_meta",
]

_HASHED = re.compile(r"hmac:[0-9a-f]{16}")

BAGGAGE_KEYS = (sc.SESSION_HASH, sc.USER_HASH, sc.TENANT_HASH)
"""Baggage keys spanguard owns; each value is a keyed hash (``hmac:<16 hex>``)."""


@dataclass(frozen=True, slots=True)
class Correlation:
    """Hashed ids of the conversation, user and tenant a request belongs to."""

    session: str | None = None
    user: str | None = None
    tenant: str | None = None

    def __bool__(self) -> bool:
        """Whether any id is present (most requests carry none)."""
        return self.session is not None or self.user is not None or self.tenant is not None

    def attributes(self) -> dict[str, str]:
        """The span attributes for the ids that are present."""
        pairs = zip(BAGGAGE_KEYS, (self.session, self.user, self.tenant), strict=True)
        return {key: value for key, value in pairs if value is not None}


_NONE = Correlation()


@contextmanager
def correlation(
    *,
    session_id: object | None = None,
    user_id: object | None = None,
    tenant_id: object | None = None,
    hasher: KeyedHasher | None = None,
) -> Iterator[Correlation]:
    """Send hashed correlation ids with every MCP request made inside the block.

    ``hasher`` defaults to the one :func:`spanguard.configure` set up (its key
    lives in ``SPANGUARD_HOME`` or ``SPANGUARD_HASH_KEY``), so the hashes match
    the ones the plugins put on the caller's own spans.
    """
    if hasher is None:
        from spanguard.config import current

        hasher = current().hasher
    ids = Correlation(
        session=hasher(session_id) if session_id is not None else None,
        user=hasher(user_id) if user_id is not None else None,
        tenant=hasher(tenant_id) if tenant_id is not None else None,
    )
    ctx = context.get_current()
    for key, value in ids.attributes().items():
        ctx = baggage.set_baggage(key, value, ctx)
    token = context.attach(ctx)
    try:
        yield ids
    finally:
        context.detach(token)


def correlation_from_meta(meta: Mapping[str, Any] | None) -> Correlation:
    """The hashed ids a request's ``_meta`` carries; malformed or raw values are dropped."""
    if not meta or not isinstance(meta.get("baggage"), str):
        return _NONE
    try:
        # A fresh Context: only what this request carries, never ambient baggage.
        entries = baggage.get_all(propagate.extract(meta, context=Context()))
    except (ValueError, TypeError, AttributeError):
        return _NONE
    values = [entries.get(key) for key in BAGGAGE_KEYS]
    session, user, tenant = (
        value if isinstance(value, str) and _HASHED.fullmatch(value) else None
        for value in values
    )
    return Correlation(session=session, user=user, tenant=tenant)


def parent_from_meta(meta: Mapping[str, Any] | None) -> Context | None:
    """The caller's trace context from a request's ``_meta``; None (the ambient
    parent) when it carries no valid ``traceparent``."""
    if not meta:
        return None
    try:
        ctx = propagate.extract(meta, context=Context())
    except (ValueError, TypeError, AttributeError):
        return None
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None
