"""Window budgets: token, cost and call limits per session, user or tenant per hour/day.

Seed 000's "dynamic token budgets": before a model call the guard reserves the
call's predicted usage (tokens, cost, one call) against every window budget that
applies, in ONE atomic operation on the shared store that counts every other
reservation in flight (so concurrent runs, processes or machines cannot each
see room and together overspend); after the call it settles the reservation to
the real usage, and gives it back when the call fails without usage or is
cancelled. A reservation nobody settles (a crashed process) stops counting after
``[usage] reservation_expiry``. The prediction is the run's loop fit, or the
estimate from the prompt for a run's first call and for calls of a run made at
the same time (:func:`spanguard.guardrails.budget.predicted_input`).

Windows are ``rolling`` (the last hour/day, kept as 60 sub-buckets: a charge
leaves the window between 1 and 61/60 window lengths after it was made, never
earlier) or ``calendar`` (the clock hour/day in ``timezone``). The clock is
injectable, so tests move time instead of sleeping.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spanguard import semconv as sc
from spanguard.errors import ConfigError, StoreError
from spanguard.guardrails import _parse
from spanguard.guardrails.budget import (
    METRIC_CALLS,
    METRIC_COST,
    METRIC_INPUT,
    METRIC_TOTAL,
    LoopBudget,
    calibrate,
    predicted_cost,
    predicted_input,
    reservations,
)
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.loopfit import LoopFit, loop_fit
from spanguard.guardrails.steps import Decision, ModelCall, ModelUsage, RunState
from spanguard.guardrails.stores import BudgetStore, Charge, Reservation, Store, open_store
from spanguard.guardrails.usage import DEFAULT_RESERVATION_EXPIRY

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy

logger = logging.getLogger("spanguard.guardrails")

GUARD_NAME = "window_budget"
ANONYMOUS = "anonymous"
_PENDING_KEY = "spanguard.window_in_flight"
# Reservation ids: unique across machines and processes (random, drawn again in a
# forked child), cheap per call (no system call).
_ids = (secrets.token_hex(6), itertools.count(1))


def _new_ids() -> None:
    global _ids
    _ids = (secrets.token_hex(6), itertools.count(1))


os.register_at_fork(after_in_child=_new_ids)
_COUNTERS_KEY = "spanguard.window_counters"
_SECONDS = {"hour": 3600, "day": 86400}
_ROLLING_BUCKETS = 60
_SCOPES = ("session", "user", "tenant")
_MODES = ("rolling", "calendar")
_LIMIT_KEYS = {"max_input_tokens": True, "max_total_tokens": True,
               "max_cost_usd": False, "max_model_calls": True}
_KEYS = ("scope", "window", "mode", "timezone", *_LIMIT_KEYS)

Scope = Literal["session", "user", "tenant"]
Window = Literal["hour", "day"]
Mode = Literal["rolling", "calendar"]


@dataclass(frozen=True, slots=True)
class WindowBudget:
    """Limits for one identity (``scope``: the run's session, user or tenant hash).

    Runs that carry no id for the scope share one ``anonymous`` budget, so
    unattributed traffic is limited too rather than let through.
    """

    name: str
    scope: Scope
    window: Window = "day"
    mode: Mode = "rolling"
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_cost_usd: float | None = None
    max_model_calls: int | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        source = f"WindowBudget {self.name!r}"
        _parse.text(self.name, "name", source)
        _parse.choice(self.scope, "scope", source, _SCOPES)
        _parse.choice(self.window, "window", source, tuple(_SECONDS))
        _parse.choice(self.mode, "mode", source, _MODES)
        for key, integer in _LIMIT_KEYS.items():
            _parse.limit(getattr(self, key), key, source, integer=integer)
        if all(getattr(self, key) is None for key in _LIMIT_KEYS):
            raise ConfigError(source, "no limit set",
                              f"set one of {', '.join(_LIMIT_KEYS)}")
        try:
            ZoneInfo(_parse.text(self.timezone, "timezone", source))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(source, f"unknown timezone {self.timezone!r}",
                              "use an IANA name such as UTC or Europe/London") from exc

    @property
    def label(self) -> str:
        zone = f" {self.timezone}" if self.mode == "calendar" else ""
        return f"{self.mode} {self.window}{zone}"

    def slot(self, now: float) -> tuple[int, int, float]:
        """(bucket, buckets in the window, seconds the counter must live) at ``now``."""
        length = _SECONDS[self.window]
        if self.mode == "rolling":
            size = length / _ROLLING_BUCKETS
            # The current sub-bucket plus 60 whole ones: at least a full window back.
            return int(now // size), _ROLLING_BUCKETS + 1, length + size
        return int((now + self._offset(now)) // length), 1, 2.0 * length

    def resets_at(self, now: float) -> float | None:
        """When a calendar window's spend goes back to 0 (None for rolling windows)."""
        if self.mode == "rolling":
            return None
        length = _SECONDS[self.window]
        start = int((now + self._offset(now)) // length) * length
        return start + length - self._offset(now)

    def _offset(self, now: float) -> float:
        if self.timezone == "UTC":
            return 0.0
        offset = datetime.fromtimestamp(now, ZoneInfo(self.timezone)).utcoffset()
        return offset.total_seconds() if offset is not None else 0.0


def parse_window_budgets(table: Mapping[str, Any], source: str) -> tuple[WindowBudget, ...]:
    budgets = []
    for name, body in table.items():
        where = f"{source}.{name}"
        if not isinstance(body, Mapping):
            raise ConfigError(where, "must be a table",
                              "write [window_budgets.NAME] with scope, window and limits")
        _parse.check_keys(body, _KEYS, where)
        if "scope" not in body:
            raise ConfigError(where, "scope is required", "one of session, user, tenant")
        budgets.append(_parse.in_table(where, WindowBudget, name=name, **body))
    return tuple(budgets)


class WindowBudgetExceeded(GuardrailViolation):
    """A session/user/tenant window budget has no room for the next call."""

    guard = GUARD_NAME
    error_type = "window_budget_exceeded"

    def __init__(self, budget: WindowBudget, metric: str, limit: float, spent: float,
                 prediction: float, resets_at: float | None, reserved: float = 0.0) -> None:
        self.budget = budget.name
        self.scope = budget.scope
        self.window = budget.label
        self.metric = metric
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.prediction = prediction
        self.resets_at = resets_at
        when = ("its spend leaves the window as it ages" if resets_at is None else
                "it resets at " + datetime.fromtimestamp(resets_at, timezone.utc)
                .isoformat(timespec="seconds"))
        super().__init__(
            f"window budget {budget.name!r} ({budget.scope}, {budget.label}) exceeded: "
            f"{metric} would reach {spent + reserved + prediction:,.4g} (spent {spent:,.4g} + "
            f"reserved in flight {reserved:,.4g} + predicted {prediction:,.4g}), over the "
            f"limit of {limit:,.4g}. The call was not sent and nothing was charged; {when}")


class BudgetStoreUnavailable(GuardrailViolation):
    """The shared store could not be asked; enforcement fails closed."""

    guard = GUARD_NAME
    error_type = "budget_store_unavailable"


class WindowBudgetGuard(Guard):
    """Reserve before, settle after, against every window budget of the policy."""

    name = GUARD_NAME
    uses_usage = True

    def __init__(self, budgets: Sequence[WindowBudget], store: BudgetStore,
                 clock: Callable[[], float] = time.time,
                 margin_sigmas: float = 3.0, margin_fraction: float = 0.05,
                 reservation_expiry: float = DEFAULT_RESERVATION_EXPIRY) -> None:
        self.budgets = tuple(budgets)
        self.store = store
        self.clock = clock
        self.margin_sigmas = margin_sigmas
        self.margin_fraction = margin_fraction
        self.reservation_expiry = reservation_expiry
        # Per budget, the (metric, limit) pairs it sets: decided once, not per call.
        self._limits = tuple(
            (budget, tuple((metric, limit) for metric, limit in (
                (METRIC_INPUT, budget.max_input_tokens), (METRIC_TOTAL, budget.max_total_tokens),
                (METRIC_COST, budget.max_cost_usd), (METRIC_CALLS, budget.max_model_calls))
                if limit is not None))
            for budget in self.budgets)
        self._limits_cost = any(budget.max_cost_usd is not None for budget in self.budgets)

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        now = self.clock()
        fit = loop_fit(run)
        concurrent = run.scratch.get(_PENDING_KEY, 0)
        tokens_in = predicted_input(run, fit, call, concurrent, self.margin_sigmas,
                                    self.margin_fraction)
        return self._reserve(run, call, fit, tokens_in, now)

    def _reserve(self, run: RunState, call: ModelCall, fit: LoopFit, tokens_in: float,
                 now: float) -> Decision:
        """One atomic reservation of ``tokens_in`` (and what follows from it) against
        every window budget; the decision says whether it was admitted."""
        tokens = tokens_in + fit.max_out
        amounts = {METRIC_INPUT: tokens_in, METRIC_TOTAL: tokens, METRIC_CALLS: 1.0,
                   METRIC_COST: predicted_cost(run, fit, call, tokens)
                   if self._limits_cost else 0.0}
        charges, owners = self._charges(run, now, amounts)
        prefix, ids = _ids
        reservation = Reservation(f"{prefix}.{next(ids)}", tuple(charges),
                                  now + self.reservation_expiry)
        try:
            result = self.store.reserve(reservation, now)
        except StoreError as exc:
            unavailable = BudgetStoreUnavailable(f"window budgets cannot be checked: {exc}")
            return Decision("deny", GUARD_NAME, str(unavailable), {}, unavailable)
        if not result.admitted:
            index = result.refused or 0
            budget, metric = owners[index]
            charge = charges[index]
            spent, reserved = result.spent[index], result.reserved[index]
            error = WindowBudgetExceeded(budget, metric, charge.limit or 0.0, spent,
                                         charge.amount, budget.resets_at(now), reserved)
            return Decision("deny", GUARD_NAME, str(error),
                            _attributes(budget, metric, charge, spent, reserved), error)
        reservations(call)[GUARD_NAME] = (reservation, owners)
        run.scratch[_PENDING_KEY] = run.scratch.get(_PENDING_KEY, 0) + 1
        tightest, room = 0, math.inf
        for index, charge in enumerate(charges):
            left = _room(charge, result.spent[index] + result.reserved[index])
            if left < room:
                tightest, room = index, left
        budget, metric = owners[tightest]
        attributes = {
            sc.BUDGET_NAME: budget.name, sc.BUDGET_METRIC: metric,
            sc.GUARDRAIL_LIMIT: charges[tightest].limit or 0.0,
            sc.GUARDRAIL_SPEND: result.spent[tightest],
            sc.GUARDRAIL_PREDICTION: charges[tightest].amount}
        if result.reserved[tightest]:
            attributes[sc.GUARDRAIL_RESERVED] = result.reserved[tightest]
        return Decision("allow", GUARD_NAME, attributes=attributes)

    def _charges(self, run: RunState, now: float, amounts: dict[str, float],
                 ) -> tuple[list[Charge], list[tuple[WindowBudget, str]]]:
        """One charge per (budget, metric) it limits, in the bucket ``now`` falls in."""
        counters = run.scratch.get(_COUNTERS_KEY)
        if counters is None:
            counters = run.scratch[_COUNTERS_KEY] = self._counters(run)
        charges: list[Charge] = []
        owners: list[tuple[WindowBudget, str]] = []
        for budget, limits in counters:
            bucket, span, ttl = budget.slot(now)
            for metric, limit, key in limits:
                if metric in amounts:
                    charges.append(Charge(key, bucket, span, amounts[metric], limit, ttl))
                    owners.append((budget, metric))
        return charges, owners

    def _counters(self, run: RunState) -> list[tuple[WindowBudget, list[tuple[str, float, str]]]]:
        """Per budget, its (metric, limit, counter key) for this run's identity; built
        once per run."""
        counters = []
        for budget, limits in self._limits:
            prefix = (f"spanguard:budget:{budget.name}:{budget.scope}:"
                      f"{getattr(run, budget.scope) or ANONYMOUS}:")
            counters.append((budget, [(metric, limit, prefix + metric)
                                      for metric, limit in limits]))
        return counters

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        """Replace the reservation with the real usage (in the buckets it was reserved
        in); a call that had none (the MCP gate charges usage a caller reports even
        when it refuses the tool call) is charged as it is."""
        actual = {METRIC_INPUT: float(usage.input_tokens),
                  METRIC_TOTAL: float(usage.input_tokens + usage.output_tokens),
                  METRIC_CALLS: 1.0}
        if usage.cost_usd is not None:
            actual[METRIC_COST] = usage.cost_usd
        calibrate(run, call, usage)
        held = self._take(run, call)
        now = self.clock()
        try:
            if held is None:
                charges, _ = self._charges(run, now, actual)
                self.store.add(charges, now)
            else:
                reservation, owners = held
                self.store.settle(reservation, [
                    actual.get(metric, charge.amount)
                    for charge, (_, metric) in zip(reservation.charges, owners, strict=True)],
                    now)
        except StoreError as exc:
            return Decision("report", GUARD_NAME,
                            f"usage could not be settled in the budget store: {exc}")
        return None

    def cancel_model_call(self, run: RunState, call: ModelCall) -> None:
        held = self._take(run, call)
        if held is None:
            return
        try:
            self.store.release(held[0], self.clock())
        except StoreError:
            logger.warning("spanguard: a window budget reservation could not be given back; "
                           "it stops counting when it expires", exc_info=True)

    @staticmethod
    def _take(run: RunState, call: ModelCall) -> Any:
        held = call.reserved.pop(GUARD_NAME, None) if call.reserved else None
        if held is not None:
            run.scratch[_PENDING_KEY] = max(run.scratch.get(_PENDING_KEY, 1) - 1, 0)
        return held


def _room(charge: Charge, spent: float) -> float:
    if charge.limit is None or charge.limit == 0:
        return 0.0
    return (charge.limit - spent - charge.amount) / charge.limit


def _attributes(budget: WindowBudget, metric: str, charge: Charge,
                spent: float, reserved: float) -> dict[str, Any]:
    return {sc.BUDGET_NAME: budget.name, sc.BUDGET_SCOPE: budget.scope,
            sc.BUDGET_WINDOW: budget.label, sc.BUDGET_METRIC: metric,
            sc.GUARDRAIL_LIMIT: charge.limit or 0.0, sc.GUARDRAIL_SPEND: spent,
            sc.GUARDRAIL_RESERVED: reserved, sc.GUARDRAIL_PREDICTION: charge.amount}


def build_window_guards(policy: Policy, store: Store | None = None) -> Sequence[Guard]:
    """One guard for all window budgets, on ``store``'s budgets (else the policy's
    store, opened now: a store that cannot be opened fails the build, not a call)."""
    if not policy.window_budgets:
        return []
    if store is None:
        store = open_store(policy.store.url if policy.store is not None else None)
    margins = policy.loop_budget or LoopBudget()
    return [WindowBudgetGuard(policy.window_budgets, store.budgets,
                              margin_sigmas=margins.margin_sigmas,
                              margin_fraction=margins.margin_fraction,
                              reservation_expiry=policy.usage.reservation_expiry)]
