"""Typed refusals. Adapters translate these into their framework's idiom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spanguard.errors import SpanguardError


class GuardrailViolation(SpanguardError):
    """A guard refused a step. ``guard`` names it; ``error_type`` goes on the span."""

    guard: str = "guardrail"
    error_type: str = "guardrail_violation"


@dataclass(frozen=True, slots=True)
class RouteFailure:
    """How one route failed: its attempts and last error, or why it was skipped."""

    route: str
    attempts: int
    error_type: str | None = None
    last_error: BaseException | None = None
    skipped: str | None = None

    def describe(self) -> str:
        if self.skipped is not None:
            return f"{self.route}: skipped, {self.skipped}"
        plural = "attempt" if self.attempts == 1 else "attempts"
        error = self.last_error
        detail = f"{type(error).__name__}: {error}" if error is not None else "no error recorded"
        return f"{self.route}: {self.attempts} {plural}, last error {self.error_type} ({detail})"


class AllRoutesFailed(SpanguardError):
    """Every configured route failed or was skipped; one error that lists them all.

    ``routes`` holds a :class:`RouteFailure` per route, in the order tried;
    ``attributes`` the routing-decision span attributes of the failed call.
    """

    error_type = "all_routes_failed"

    def __init__(self, routes: Sequence[RouteFailure],
                 attributes: Mapping[str, Any] | None = None) -> None:
        self.routes = tuple(routes)
        self.attributes = dict(attributes or {})
        lines = "\n".join(f"  - {route.describe()}" for route in self.routes)
        count = len(self.routes)
        which = "the only route" if count == 1 else f"all {count} routes"
        super().__init__(
            f"{which} failed; no answer was produced:\n{lines}\n"
            "Nothing was returned to the caller. Try again after the waits above, add a "
            "fallback route, or raise RetryPolicy(max_attempts=..., deadline=...).")


class DocumentsWithheld(GuardrailViolation):
    """Some retrieved documents must not reach the model; ``blocked`` are their indices.

    Adapters drop those documents from the retrieval (the rest reaches the model)
    instead of failing the step: :meth:`Enforcer.admit_retrieval
    <spanguard.guardrails.enforcer.Enforcer.admit_retrieval>` returns them.
    """

    blocked: tuple[int, ...] = ()


class ResultWithheld(GuardrailViolation):
    """A tool result that must not reach the model: adapters replace it, whole, with
    this refusal (nothing of it is shown), instead of appending a note to it."""
