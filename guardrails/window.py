"""Window budgets: token, cost and call limits per session, user or tenant per hour/day.

Seed 000's "dynamic token budgets": before a model call the guard reserves the
call's predicted usage against every window budget that applies, in ONE atomic
check-and-charge on the shared store (so concurrent runs, processes or
machines cannot each see room and together overspend); after the call it
settles the reservation with the real usage. The prediction is the run's loop
fit (:func:`spanguard.guardrails.budget.loop_fit`), or the caller's estimate.

Windows are ``rolling`` (the last hour/day, kept as 60 sub-buckets: a charge
leaves the window between 1 and 61/60 window lengths after it was made, never
earlier) or ``calendar`` (the clock hour/day in ``timezone``). The clock is
injectable, so tests move time instead of sleeping.
"""

from __future__ import annotations

import math
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
    loop_fit,
)
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.steps import Decision, ModelCall, ModelUsage, RunState
from spanguard.guardrails.stores import BudgetStore, Charge, Store, open_store

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy

GUARD_NAME = "window_budget"
ANONYMOUS = "anonymous"
_PENDING_KEY = "spanguard.window_pending"
_PREFIX_KEY = "spanguard.window_prefixes"
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
                 prediction: float, resets_at: float | None) -> None:
        self.budget = budget.name
        self.scope = budget.scope
        self.window = budget.label
        self.metric = metric
        self.limit = limit
        self.spent = spent
        self.prediction = prediction
        self.resets_at = resets_at
        when = ("its spend leaves the window as it ages" if resets_at is None else
                "it resets at " + datetime.fromtimestamp(resets_at, timezone.utc)
                .isoformat(timespec="seconds"))
        super().__init__(
            f"window budget {budget.name!r} ({budget.scope}, {budget.label}) exceeded: "
            f"{metric} would reach {spent + prediction:,.4g} (spent {spent:,.4g} + "
            f"reserved {prediction:,.4g}), over the limit of {limit:,.4g}. The call was "
            f"not sent and nothing was charged; {when}")


class BudgetStoreUnavailable(GuardrailViolation):
    """The shared store could not be asked; enforcement fails closed."""

    guard = GUARD_NAME
    error_type = "budget_store_unavailable"


class WindowBudgetGuard(Guard):
    """Reserve before, settle after, against every window budget of the policy."""

    name = GUARD_NAME

    def __init__(self, budgets: Sequence[WindowBudget], store: BudgetStore,
                 clock: Callable[[], float] = time.time,
                 margin_sigmas: float = 3.0, margin_fraction: float = 0.05) -> None:
        self.budgets = tuple(budgets)
        self.store = store
        self.clock = clock
        self.margin_sigmas = margin_sigmas
        self.margin_fraction = margin_fraction
        # Per budget, the (metric, limit) pairs it sets: decided once, not per call.
        self._limits = tuple(
            (budget, tuple((metric, limit) for metric, limit in (
                (METRIC_INPUT, budget.max_input_tokens), (METRIC_TOTAL, budget.max_total_tokens),
                (METRIC_COST, budget.max_cost_usd), (METRIC_CALLS, budget.max_model_calls))
                if limit is not None))
            for budget in self.budgets)

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        now = self.clock()
        fit = loop_fit(run)
        tokens_in = fit.next_input(call.is_retry, self.margin_sigmas, self.margin_fraction)
        if call.estimated_input_tokens is not None and call.estimated_input_tokens > tokens_in:
            tokens_in = float(call.estimated_input_tokens)
        tokens = tokens_in + fit.max_out
        seen = fit.spent + run.output_tokens
        amounts = {METRIC_INPUT: tokens_in, METRIC_TOTAL: tokens,
                   METRIC_COST: run.cost_usd / seen * tokens if seen else 0.0,
                   METRIC_CALLS: 1.0}
        prefixes = run.scratch.get(_PREFIX_KEY)
        if prefixes is None:
            prefixes = run.scratch[_PREFIX_KEY] = self._prefixes(run)
        charges: list[Charge] = []
        owners: list[tuple[WindowBudget, str]] = []
        for (budget, limits), prefix in zip(self._limits, prefixes, strict=True):
            bucket, span, ttl = budget.slot(now)
            for metric, limit in limits:
                charges.append(Charge(prefix + metric, bucket, span, amounts[metric], limit,
                                      ttl))
                owners.append((budget, metric))
        try:
            result = self.store.try_charge(charges, now)
        except StoreError as exc:
            unavailable = BudgetStoreUnavailable(f"window budgets cannot be checked: {exc}")
            return Decision("deny", GUARD_NAME, str(unavailable), {}, unavailable)
        if not result.admitted:
            index = result.refused or 0
            budget, metric = owners[index]
            charge = charges[index]
            error = WindowBudgetExceeded(budget, metric, charge.limit or 0.0,
                                         result.spent[index], charge.amount,
                                         budget.resets_at(now))
            return Decision("deny", GUARD_NAME, str(error),
                            _attributes(budget, metric, charge, result.spent[index]), error)
        pending = run.scratch.get(_PENDING_KEY)
        if pending is None:
            pending = run.scratch[_PENDING_KEY] = {}
        pending[id(call)] = (charges, owners)
        tightest, room = 0, math.inf
        for index, charge in enumerate(charges):
            left = _room(charge, result.spent[index])
            if left < room:
                tightest, room = index, left
        budget, metric = owners[tightest]
        return Decision("allow", GUARD_NAME, attributes={
            sc.BUDGET_NAME: budget.name, sc.BUDGET_METRIC: metric,
            sc.GUARDRAIL_LIMIT: charges[tightest].limit or 0.0,
            sc.GUARDRAIL_SPEND: result.spent[tightest],
            sc.GUARDRAIL_PREDICTION: charges[tightest].amount})

    def _prefixes(self, run: RunState) -> list[str]:
        """Counter key prefixes for this run's identities (built once per run)."""
        return [f"spanguard:budget:{budget.name}:{budget.scope}:"
                f"{getattr(run, budget.scope) or ANONYMOUS}:" for budget in self.budgets]

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        """Replace the reservation with the real usage (same buckets as reserved)."""
        pending: dict[int, Any] | None = run.scratch.get(_PENDING_KEY)
        if not pending:
            return None
        entry = pending.pop(id(call), None)
        charges, owners = entry if entry is not None else pending.pop(next(iter(pending)))
        actual = {METRIC_INPUT: float(usage.input_tokens),
                  METRIC_TOTAL: float(usage.input_tokens + usage.output_tokens),
                  METRIC_CALLS: 1.0}
        if usage.cost_usd is not None:
            actual[METRIC_COST] = usage.cost_usd
        deltas = []
        for charge, (_, metric) in zip(charges, owners, strict=True):
            delta = actual.get(metric, charge.amount) - charge.amount
            if delta:
                deltas.append(Charge(charge.key, charge.bucket, charge.span, delta, None,
                                     charge.ttl))
        if not deltas:
            return None
        try:
            self.store.add(deltas, self.clock())
        except StoreError as exc:
            return Decision("report", GUARD_NAME,
                            f"usage could not be settled in the budget store: {exc}")
        return None


def _room(charge: Charge, spent: float) -> float:
    if charge.limit is None or charge.limit == 0:
        return 0.0
    return (charge.limit - spent - charge.amount) / charge.limit


def _attributes(budget: WindowBudget, metric: str, charge: Charge,
                spent: float) -> dict[str, Any]:
    return {sc.BUDGET_NAME: budget.name, sc.BUDGET_SCOPE: budget.scope,
            sc.BUDGET_WINDOW: budget.label, sc.BUDGET_METRIC: metric,
            sc.GUARDRAIL_LIMIT: charge.limit or 0.0, sc.GUARDRAIL_SPEND: spent,
            sc.GUARDRAIL_PREDICTION: charge.amount}


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
                              margin_fraction=margins.margin_fraction)]
