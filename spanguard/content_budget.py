"""How many of a span's attributes captured content may take, so nothing else is evicted.

The OpenTelemetry SDK keeps at most ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` attributes per
span (128 unless set). Past it, it evicts the *oldest* attribute, which on a chat span
is its identity (``openinference.span.kind``, ``gen_ai.operation.name``, the model),
and logs one warning per eviction. Content is the only part of a span whose size the
run decides, so it is the part that is budgeted:

- metadata (identity, request, response, usage, cost, run ids, guardrail fields)
  keeps :data:`METADATA_RESERVE` attributes, more than any spanguard span uses;
- content gets the rest: the two GenAI JSON attributes and the reference
  attributes (:data:`FIXED_CONTENT_ATTRIBUTES`), then the flattened OpenInference
  message keys, two thirds for the call's new input messages and the remainder
  (plus whatever the input left) for its answer.

With the SDK's default limit a chat span therefore never passes 128 attributes, on
spanguard's own provider or anyone else's. Messages that do not fit are left out of
the flattened keys only (the GenAI JSON always holds every new message); the span then
says ``spanguard.content.truncated = true`` and how many keys it left out.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from opentelemetry.sdk.trace import SpanLimits

__all__ = ["ContentBudget", "content_budget"]

logger = logging.getLogger("spanguard")

DEFAULT_SPAN_ATTRIBUTE_LIMIT = 128
METADATA_RESERVE = 64
# gen_ai.input.messages, gen_ai.output.messages, the history count and span id,
# and the truncation flag and count.
FIXED_CONTENT_ATTRIBUTES = 6


class ContentBudget(NamedTuple):
    """Flattened OpenInference message keys a chat span may write."""

    inputs: int
    outputs: int


def content_budget(span_attribute_limit: int | None = None) -> ContentBudget:
    """The budget under ``span_attribute_limit`` (default: the SDK's, from the environment)."""
    limit = span_attribute_limit
    if limit is None:
        try:
            limit = SpanLimits().max_span_attributes
        except ValueError as exc:  # a malformed OTEL_*_LIMIT: the SDK will refuse it too
            logger.warning("spanguard: %s; budgeting content for %d attributes per span",
                           exc, DEFAULT_SPAN_ATTRIBUTE_LIMIT)
            limit = DEFAULT_SPAN_ATTRIBUTE_LIMIT
        if limit is None:  # no limit configured: keep the default budget anyway
            limit = DEFAULT_SPAN_ATTRIBUTE_LIMIT
    flattened = max(0, limit - METADATA_RESERVE - FIXED_CONTENT_ATTRIBUTES)
    inputs = flattened * 2 // 3
    return ContentBudget(inputs, flattened - inputs)
