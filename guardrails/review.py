"""Reviewer attention: how long a checker looked at a hold before deciding it.

Seed 004's "reviewer complacency" signal: approvals that come faster than anyone
can read the request (its example: modal approvals under 350 ms) mean the
checker rubber-stamps. The approval latency (hold shown -> decision) is kept on
the hold record (``review_seconds``), on the hold guard's decision span
(``spanguard.review.seconds``) and in the ``spanguard.review.duration``
histogram. A review UI passes ``shown_at`` (when it displayed the request) to
``approve``/``reject``; without it the latency runs from the request's creation,
which can only be longer than the real review: an approval under the floor is
then certainly too fast, while one shown late and approved at once can pass.

``min_review_seconds`` is the floor. ``action = "flag"`` lets a fast approval run
and records the finding (``error.type=review_below_floor``); ``"refuse"`` voids
the approval (the hold becomes ``rejected``, with the reason) so the call does
not run and a new request must be made and reviewed.

The check lives in the hold guard, not in a guard of its own: it must happen
between reading an approval and spending it, which only the hold guard does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from spanguard.guardrails import _parse
from spanguard.guardrails.errors import GuardrailViolation

ERROR_TYPE = "review_below_floor"
ReviewAction = Literal["flag", "refuse"]


@dataclass(frozen=True, slots=True)
class ReviewRules:
    """``min_review_seconds``: the floor (None: latency recorded, nothing flagged)."""

    min_review_seconds: float | None = None
    action: ReviewAction = "flag"

    def __post_init__(self) -> None:
        source = "ReviewRules"
        if self.min_review_seconds is not None:
            _parse.seconds(self.min_review_seconds, "min_review_seconds", source,
                           strict=True)
        _parse.choice(self.action, "action", source, ("flag", "refuse"))

    def too_fast(self, review_seconds: float | None) -> bool:
        floor = self.min_review_seconds
        return floor is not None and review_seconds is not None and review_seconds < floor


def parse_review(table: Mapping[str, Any], source: str) -> ReviewRules:
    """``[review]``: min_review_seconds, action (flag | refuse)."""
    _parse.check_keys(table, ("min_review_seconds", "action"), source)
    return _parse.in_table(source, ReviewRules, **table)


class ReviewBelowFloor(GuardrailViolation):
    """An approval came faster than the policy's review floor."""

    guard = "holds"
    error_type = ERROR_TYPE

    def __init__(self, hold_id: str, seconds: float, floor: float, refused: bool) -> None:
        self.hold_id = hold_id
        self.seconds = seconds
        self.floor = floor
        outcome = ("the approval was voided and the call did not run; request and review "
                   "it again" if refused else "the call ran; the approval is flagged")
        super().__init__(f"hold {hold_id} was approved {seconds:.3f}s after it was shown, "
                         f"under the {floor:g}s review floor: {outcome}")
