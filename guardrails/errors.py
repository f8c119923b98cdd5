"""Typed refusals. Adapters translate these into their framework's idiom."""

from __future__ import annotations

from spanguard.errors import SpanguardError


class GuardrailViolation(SpanguardError):
    """A guard refused a step. ``guard`` names it; ``error_type`` goes on the span."""

    guard: str = "guardrail"
    error_type: str = "guardrail_violation"
