"""Usage accounting: what budgets charge when a provider reports nothing, and how long a
reservation may stay unsettled.

A model that returns no usage (several providers in streaming mode, most custom
models) would otherwise be charged 0 tokens: token and cost budgets would stop
working without a word. ``on_missing_usage`` decides instead:

* ``"estimate"`` (default): charge an estimate from the prompt and the reply's
  text (:mod:`spanguard.guardrails.estimate`), mark the span
  ``spanguard.usage.estimated=true`` and log a warning once per model.
* ``"refuse"``: fail closed: the estimate is charged and the run is stopped with
  :class:`UsageMissing`.
* ``"allow"``: charge 0, as a deliberate choice.

``reservation_expiry``: a reservation a process never settled (it crashed, or a
call hangs) stops counting after this many seconds, in the shared store and on
the run; it must be longer than the slowest model call.

Also here: :func:`usage_report`, the one reading of a caller-reported usage
(MCP's ``_meta["spanguard/usage"]``), which refuses junk instead of charging 0.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from spanguard import semconv as sc
from spanguard.guardrails import _parse
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.estimate import input_estimate, text_tokens
from spanguard.guardrails.steps import ModelCall, ModelUsage

logger = logging.getLogger("spanguard.guardrails")

GUARD_NAME = "usage"
MODES = ("estimate", "refuse", "allow")
DEFAULT_RESERVATION_EXPIRY = 900.0
MAX_REPORTED_TOKENS = 1_000_000_000
MAX_REPORTED_COST_USD = 1_000_000.0
_KEYS = ("on_missing_usage", "reservation_expiry")
_COUNTS = ("input_tokens", "output_tokens", "total_tokens")
_IGNORED = ("input_token_details", "output_token_details")
_REPORT_KEYS = (*_COUNTS, "cost_usd", "model", *_IGNORED)

MissingUsageMode = Literal["estimate", "refuse", "allow"]


@dataclass(frozen=True, slots=True)
class UsageAccounting:
    """The policy's ``[usage]`` table; the defaults apply when it is absent."""

    on_missing_usage: MissingUsageMode = "estimate"
    reservation_expiry: float = DEFAULT_RESERVATION_EXPIRY

    def __post_init__(self) -> None:
        _parse.choice(self.on_missing_usage, "on_missing_usage", "UsageAccounting", MODES)
        _parse.seconds(self.reservation_expiry, "reservation_expiry", "UsageAccounting",
                       strict=True)


def parse_usage_table(table: Mapping[str, Any], source: str) -> UsageAccounting:
    """``[usage]``: ``on_missing_usage`` and ``reservation_expiry`` (seconds, or "15m")."""
    _parse.check_keys(table, _KEYS, source)
    values = dict(table)
    if "reservation_expiry" in values:
        values["reservation_expiry"] = _parse.duration(
            values["reservation_expiry"], "reservation_expiry", source)
    return _parse.in_table(source, UsageAccounting, **values)


class UsageMissing(GuardrailViolation):
    """A model reported no usage and the policy says ``on_missing_usage = "refuse"``."""

    guard = GUARD_NAME
    error_type = "usage_missing"

    def __init__(self, model: str | None, usage: ModelUsage) -> None:
        self.model = model
        super().__init__(
            f"model {model or '(unnamed)'!r} reported no token usage and on_missing_usage "
            "is \"refuse\": the run is stopped, because its token and cost budgets cannot "
            f"be enforced without it. The call was charged an estimate ({usage.input_tokens:,} "
            f"input, {usage.output_tokens:,} output tokens). Turn on the provider's usage "
            "reporting (for streams: stream_usage=True or stream_options include_usage), or "
            "set on_missing_usage = \"estimate\" in [usage] to go on with estimates")


class InvalidUsage(GuardrailViolation):
    """A caller-reported usage that is not a count: refused, never charged as 0."""

    guard = GUARD_NAME
    error_type = "invalid_usage"

    def __init__(self, source: str, problem: str) -> None:
        self.problem = problem
        super().__init__(
            f"invalid {source}: {problem}. The call was refused and nothing was charged; "
            f"report usage as {{\"input_tokens\": N, \"output_tokens\": M}} with whole "
            f"numbers from 0 to {MAX_REPORTED_TOKENS:,} (optional \"model\", \"cost_usd\")")


def usage_report(value: object, source: str) -> tuple[str | None, ModelUsage]:
    """(model, usage) from a caller's report, or :class:`InvalidUsage` naming what is wrong.

    Accepts a table of whole-number counts (``input_tokens``, ``output_tokens``; a
    ``total_tokens`` and LangChain's ``*_token_details`` are allowed and not
    charged), an optional ``model`` name and ``cost_usd``. Refuses everything
    else, including negative, fractional, boolean and absurd counts (over
    :data:`MAX_REPORTED_TOKENS`), and a table without a count.
    """
    if not isinstance(value, Mapping):
        raise InvalidUsage(source, f"expected an object of token counts, got "
                                   f"{type(value).__name__}")
    unknown = sorted(str(key) for key in value if key not in _REPORT_KEYS)
    if unknown:
        raise InvalidUsage(source, f"unknown key(s) {', '.join(map(repr, unknown))} (known: "
                                   f"{', '.join(_REPORT_KEYS)})")
    if not any(key in value for key in ("input_tokens", "output_tokens")):
        raise InvalidUsage(source, "no input_tokens or output_tokens")
    counts = {key: _count(value[key], key, source) for key in _COUNTS if key in value}
    model = value.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidUsage(source, f"model must be a string, got {type(model).__name__}")
    cost = value.get("cost_usd")
    if cost is not None and not (_is_number(cost) and 0 <= cost <= MAX_REPORTED_COST_USD):
        raise InvalidUsage(source, f"cost_usd must be a number from 0 to "
                                   f"{MAX_REPORTED_COST_USD:,.0f}, got {_shown(cost)}")
    return model, ModelUsage(counts.get("input_tokens", 0), counts.get("output_tokens", 0),
                             None if cost is None else float(cost))


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _count(value: object, key: str, source: str) -> int:
    if (isinstance(value, int | float) and _is_number(value) and float(value).is_integer()
            and 0 <= value <= MAX_REPORTED_TOKENS):
        return int(value)
    raise InvalidUsage(source, f"{key} must be a whole number from 0 to "
                               f"{MAX_REPORTED_TOKENS:,}, got {_shown(value)}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class MissingUsage:
    """Fills in the usage of a call whose provider reported none, as the policy says."""

    def __init__(self, rules: UsageAccounting) -> None:
        self.mode = rules.on_missing_usage
        self._warned: set[str | None] = set()
        self._lock = threading.Lock()

    def resolve(self, call: ModelCall,
                usage: ModelUsage) -> tuple[ModelUsage, UsageMissing | None]:
        """The usage to charge, and the refusal to raise once it is charged (or None)."""
        if self.mode == "allow":
            return usage, None
        tokens_in = input_estimate(call) or 0
        tokens_out = text_tokens(usage.output(), call.model) if usage.output is not None else 0
        cost = call.price(tokens_in, tokens_out) if call.price is not None else None
        estimated = ModelUsage(tokens_in, tokens_out, cost, reported=False, estimated=True)
        self._warn_once(call.model)
        return estimated, (UsageMissing(call.model, estimated) if self.mode == "refuse" else None)

    def _warn_once(self, model: str | None) -> None:
        with self._lock:
            if model in self._warned:
                return
            self._warned.add(model)
        logger.warning(
            "spanguard: model %r reported no token usage; its calls are charged an estimate "
            "from the prompt and reply text (on_missing_usage = %r) and their spans carry "
            "%s=true", model, self.mode, sc.USAGE_ESTIMATED)

