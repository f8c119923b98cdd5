"""Per-run loop budgets that refuse a model call *before* the provider sees it.

Before each call the guard predicts the call's input from the run's own growth
(the fit of ``t_k = S + u*k + r*R_k``, :mod:`spanguard.guardrails.loopfit`) with
a safety margin, and from the prompt itself when the run has no history or other
calls of the run are in flight (:mod:`spanguard.guardrails.estimate`); the larger
of the two is the prediction. It then *reserves* the prediction (tokens, cost, one
call) on the run, atomically with the check: a call is refused when spend +
what calls in flight have reserved + prediction would pass a limit. After the
call the reservation is replaced by the real usage; on an error or a
cancellation it is given back. Admitting only what is predicted to fit, counting
what is in flight, is what keeps the run *under* the limit when its branches call
the model at the same time: checking spend alone would let every parallel call
through.

Reservations the run never settles (a call that hangs, a stream nobody reads)
stop counting after the policy's ``[usage] reservation_expiry``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spanguard import semconv as sc
from spanguard.guardrails import _parse
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.estimate import input_estimate
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.inflight import InFlight, in_flight
from spanguard.guardrails.loopfit import LoopFit, loop_fit
from spanguard.guardrails.steps import Decision, ModelCall, ModelUsage, RunState, ToolCall
from spanguard.guardrails.stores.contracts import fits
from spanguard.guardrails.usage import DEFAULT_RESERVATION_EXPIRY

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy
    from spanguard.guardrails.stores import Store

GUARD_NAME = "loop_budget"
_MIN_CALLS_TO_PROJECT = 3
_SCALE_KEY = "spanguard.estimate_correction"
_NO_CORRECTION = (1.0, 0.0)
_COUNTS_KEY = "spanguard.token_counts"
MAX_ESTIMATE_RATIO = 2.0

METRIC_INPUT = "input_tokens"
METRIC_TOTAL = "total_tokens"
METRIC_COST = "cost_usd"
METRIC_CALLS = "model_calls"
METRIC_TOOL_CALLS = "tool_calls"


@dataclass(frozen=True, slots=True)
class LoopBudget:
    """Limits for one run; every limit is optional.

    ``max_model_calls`` is also the run's step limit: when the projection says a
    limit will be passed before that step, the guard reports it (a span event)
    and, with ``stop_on_projected_breach``, refuses right away. The margin added
    to each prediction is ``max(margin_sigmas * residual sd, margin_fraction *
    prediction)``: larger margins stop runaways with less overshoot risk and
    cost more headroom for normal runs.
    """

    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_cost_usd: float | None = None
    max_model_calls: int | None = None
    max_tool_calls: int | None = None
    stop_on_projected_breach: bool = False
    margin_sigmas: float = 3.0
    margin_fraction: float = 0.05

    def __post_init__(self) -> None:
        _check(self, "LoopBudget")

    @property
    def limits_tokens(self) -> bool:
        return self.max_input_tokens is not None or self.max_total_tokens is not None


_INT_LIMITS = ("max_input_tokens", "max_total_tokens", "max_model_calls", "max_tool_calls")
_FLOAT_KEYS = ("max_cost_usd", "margin_sigmas", "margin_fraction")
_KEYS = (*_INT_LIMITS, *_FLOAT_KEYS, "stop_on_projected_breach")


def _check(budget: LoopBudget, source: str) -> None:
    for key in _INT_LIMITS:
        _parse.limit(getattr(budget, key), key, source, integer=True)
    for key in _FLOAT_KEYS:
        _parse.limit(getattr(budget, key), key, source, integer=False)
    _parse.flag(budget.stop_on_projected_breach, "stop_on_projected_breach", source)


def parse_loop_budget(table: Mapping[str, Any], source: str) -> LoopBudget:
    """``[loop_budget]``: the :class:`LoopBudget` fields (TOML integers become floats
    where the field is a float)."""
    _parse.check_keys(table, _KEYS, source)
    values = dict(table)
    for key in _FLOAT_KEYS:
        if key in values:
            values[key] = float(_parse.limit(values[key], key, source, integer=False))
    return _parse.in_table(source, LoopBudget, **values)


class LoopBudgetExceeded(GuardrailViolation):
    """The next model (or tool) call would pass (or is projected to pass) a run's limit.

    Carries what the message says: ``metric``, ``limit``, ``spent``, ``reserved``
    (what calls in flight hold), ``prediction``, the fitted ``s``/``u``/``r``, the
    ``step`` refused and, for an early stop, ``projected_step``/``projected_total``.
    """

    guard = GUARD_NAME
    error_type = "loop_budget_exceeded"

    def __init__(self, metric: str, limit: float, spent: float, prediction: float,
                 fit: LoopFit, step: int, projected_step: int | None = None,
                 projected_total: float | None = None, reserved: float = 0.0) -> None:
        self.metric = metric
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.prediction = prediction
        self.s, self.u, self.r = fit.s, fit.u, fit.r
        self.step = step
        self.projected_step = projected_step
        self.projected_total = projected_total
        subject = "tool call" if metric == METRIC_TOOL_CALLS else "model call"
        if projected_step is None:
            what = (f"{subject} {step} would bring {metric} to "
                    f"{_num(spent + reserved + prediction)} (spent {_num(spent)} + reserved "
                    f"in flight {_num(reserved)} + predicted {_num(prediction)}), over the "
                    f"limit of {_num(limit)}")
        else:
            what = (f"{metric} is projected to pass the limit of {_num(limit)} at call "
                    f"{projected_step} (projected {_num(projected_total or 0.0)}; spent "
                    f"{_num(spent)}, next call predicted {_num(prediction)}) and "
                    "stop_on_projected_breach is set")
        super().__init__(f"loop budget exceeded: {what}; {_fitted(fit)}. The call was not "
                         f"sent and the run's {fit.n} completed model call(s) are kept; raise "
                         "the limit in [loop_budget] or shorten the loop")


def _fitted(fit: LoopFit) -> str:
    if fit.n == 0:
        return ("no model call of this run has completed yet, so the prediction is the "
                "estimate from the prompt")
    return (f"fitted t_k = S + u*k + r*R_k (each >= 0) with S={fit.s:,.0f}, u={fit.u:,.0f}, "
            f"r={fit.r:,.0f} from {fit.n} call(s)")


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() or value >= 100 else f"{value:,.4f}"


def predicted_input(run: RunState, fit: LoopFit, call: ModelCall, concurrent: int,
                    sigmas: float, fraction: float) -> float:
    """The call's predicted input tokens.

    Counted from the call's own text (:func:`measured_input`) when the run has no
    history or ``concurrent`` calls of the run are in flight: the fit extrapolates
    a loop's calls one after another, which parallel branches are not. Otherwise
    the fit, with its margin (it predicts what the provider will report, hidden
    prompt overheads included), raised to the caller's own count when it gave one.
    """
    if call.estimated_input_tokens is None and (fit.n == 0 or concurrent):
        measured = measured_input(run, call)
        if measured is not None:
            return measured
    predicted = fit.next_input(call.is_retry, sigmas, fraction)
    if call.estimated_input_tokens is not None and call.estimated_input_tokens > predicted:
        predicted = float(call.estimated_input_tokens)
    return predicted


def measured_input(run: RunState, call: ModelCall) -> float | None:
    """The call's input counted from its text and corrected by what the run's reported
    usage taught (:func:`calibrate`); None when the adapter gave no text."""
    if call.prompt is None:
        return None
    cache = run.scratch.get(_COUNTS_KEY)
    if cache is None:
        cache = run.scratch[_COUNTS_KEY] = {}
    estimate = input_estimate(call, cache)
    if estimate is None:
        return None
    correction: tuple[float, float] = run.scratch.get(_SCALE_KEY, _NO_CORRECTION)
    ratio, offset = correction
    return max(estimate * ratio, estimate + offset)


def calibrate(run: RunState, call: ModelCall, usage: ModelUsage) -> None:
    """Learn how far this run's estimates fall short of the usage its provider reports.

    Two corrections, the larger applied: a ratio (a tokenizer that counts more than
    the estimate's, capped at :data:`MAX_ESTIMATE_RATIO` so that a small first
    prompt with a large hidden overhead cannot multiply every later estimate) and
    an offset (hidden prompt overhead: a provider's tool-use preamble).
    """
    estimate = call.estimated_input_tokens
    if (call.prompt is None or not estimate or not usage.reported
            or usage.input_tokens <= estimate):
        return
    ratio, offset = run.scratch.get(_SCALE_KEY, _NO_CORRECTION)
    run.scratch[_SCALE_KEY] = (
        max(ratio, min(usage.input_tokens / estimate, MAX_ESTIMATE_RATIO)),
        max(offset, float(usage.input_tokens - estimate)))


def predicted_cost(run: RunState, fit: LoopFit, call: ModelCall, tokens: float) -> float:
    """USD for ``tokens`` more: the run's observed rate, else the adapter's price of the
    model (a run's first call), else 0."""
    seen = fit.spent + run.output_tokens
    if seen and run.cost_usd:
        return run.cost_usd / seen * tokens
    if call.price is not None:
        return call.price(math.ceil(tokens), 0) or 0.0
    return 0.0


def reservations(call: ModelCall) -> dict[str, Any]:
    """Where guards keep what they reserved for ``call``."""
    held = call.reserved
    if held is None:
        held = call.reserved = {}
    return held


def _first_breach(spent: float, first: float, step: float, per_call: float, scale: float,
                  limit: float, horizon: int) -> tuple[int, float] | None:
    """Smallest number of further calls whose projected cumulative passes ``limit``."""
    def total(m: int) -> float:
        return spent + scale * ((first + per_call) * m + step * m * (m - 1) / 2)

    if horizon <= 0 or total(horizon) <= limit:
        return None
    low, high = 1, horizon
    while low < high:
        mid = (low + high) // 2
        if total(mid) > limit:
            high = mid
        else:
            low = mid + 1
    return low, total(low)


class LoopBudgetGuard(Guard):
    """Enforces one :class:`LoopBudget` on every run of an enforcer."""

    name = GUARD_NAME
    uses_usage = True

    def __init__(self, budget: LoopBudget,
                 reservation_expiry: float = DEFAULT_RESERVATION_EXPIRY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.reservation_expiry = reservation_expiry
        self.clock = clock
        self._limits_models = any(limit is not None for limit in (
            budget.max_input_tokens, budget.max_total_tokens, budget.max_cost_usd,
            budget.max_model_calls))

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        if not self._limits_models:
            return None
        budget = self.budget
        fit = loop_fit(run)
        flight = in_flight(run)
        if flight.calls:
            flight.expire(self.clock())
        tokens_in = predicted_input(run, fit, call, flight.calls, budget.margin_sigmas,
                                    budget.margin_fraction)
        tokens = tokens_in + fit.max_out
        cost = (predicted_cost(run, fit, call, tokens) if budget.max_cost_usd is not None
                else 0.0)
        step = fit.n + flight.calls + 1
        tightest = None
        headroom = math.inf
        for metric, limit, spent, reserved, prediction in self._checks(
                run, fit, flight, tokens_in, tokens, cost):
            if not fits(spent + reserved, prediction, limit):
                return self._deny(metric, limit, spent, prediction, fit, step, reserved=reserved)
            room = (limit - spent - reserved - prediction) / limit if limit else 0.0
            if room < headroom:
                tightest, headroom = (metric, limit, spent, reserved, prediction), room
        projection = self._projection(run, fit, step) if tightest is not None else None
        if projection is not None and not projection.allowed:
            return projection
        reservations(call)[GUARD_NAME] = flight.reserve(
            tokens_in, tokens, cost, self.clock() + self.reservation_expiry)
        if projection is not None or tightest is None:
            return projection
        metric, limit, spent, reserved, prediction = tightest
        # Allow events stay small (each attribute costs the SDK ~1-2 us per call);
        # the fit and step go on report/deny decisions, where they explain something.
        attributes = {sc.BUDGET_METRIC: metric, sc.GUARDRAIL_LIMIT: limit,
                      sc.GUARDRAIL_SPEND: spent, sc.GUARDRAIL_PREDICTION: prediction}
        if reserved:
            attributes[sc.GUARDRAIL_RESERVED] = reserved
        return Decision("allow", GUARD_NAME, attributes=attributes)

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        """The real usage is on the run now (the enforcer put it there): drop the
        reservation."""
        calibrate(run, call, usage)
        self.cancel_model_call(run, call)
        return None

    def cancel_model_call(self, run: RunState, call: ModelCall) -> None:
        held = call.reserved
        if held is not None and GUARD_NAME in held:
            in_flight(run).settle(held.pop(GUARD_NAME))

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        """``run.tool_calls`` counts this call already (the enforcer takes it back when
        the call is refused), under the run's lock: parallel tool calls are counted
        one at a time."""
        limit = self.budget.max_tool_calls
        if limit is None or run.tool_calls <= limit:
            return None
        return self._deny(METRIC_TOOL_CALLS, limit, run.tool_calls - 1, 1, loop_fit(run),
                          run.tool_calls)

    def _checks(self, run: RunState, fit: LoopFit, flight: InFlight, tokens_in: float,
                tokens: float, cost: float) -> list[tuple[str, float, float, float, float]]:
        budget = self.budget
        checks: list[tuple[str, float, float, float, float]] = []
        if budget.max_input_tokens is not None:
            checks.append((METRIC_INPUT, budget.max_input_tokens, fit.spent, flight.input,
                           tokens_in))
        if budget.max_total_tokens is not None:
            checks.append((METRIC_TOTAL, budget.max_total_tokens,
                           fit.spent + run.output_tokens, flight.total, tokens))
        if budget.max_cost_usd is not None:
            checks.append((METRIC_COST, budget.max_cost_usd, run.cost_usd, flight.cost, cost))
        if budget.max_model_calls is not None:
            checks.append((METRIC_CALLS, budget.max_model_calls, fit.n, flight.calls, 1))
        return checks

    def _projection(self, run: RunState, fit: LoopFit, step: int) -> Decision | None:
        """Once per run: will a limit be passed before the step limit? Report or stop."""
        budget = self.budget
        if (fit.reported or budget.max_model_calls is None
                or fit.n < _MIN_CALLS_TO_PROJECT):
            return None
        horizon = budget.max_model_calls - fit.n
        first, growth = fit.growth()
        tokens = fit.spent + run.output_tokens
        candidates = [
            (METRIC_INPUT, budget.max_input_tokens, fit.spent, 0.0, 1.0),
            (METRIC_TOTAL, budget.max_total_tokens, tokens, fit.out_seen / fit.n, 1.0),
            (METRIC_COST, budget.max_cost_usd, run.cost_usd, fit.out_seen / fit.n,
             run.cost_usd / tokens if tokens else 0.0),
        ]
        for metric, limit, spent, per_call, scale in candidates:
            if limit is None:
                continue
            breach = _first_breach(spent, first, growth, per_call, scale, limit, horizon)
            if breach is None:
                continue
            fit.reported = True
            calls, total = breach
            projected_step = fit.n + calls
            prediction = scale * (first + per_call)
            if budget.stop_on_projected_breach:
                return self._deny(metric, limit, spent, prediction, fit, step,
                                  projected_step, total)
            attributes = self._attributes(metric, limit, spent, prediction, fit, step)
            attributes[sc.BUDGET_PROJECTED_STEP] = projected_step
            attributes[sc.BUDGET_PROJECTED_TOTAL] = total
            return Decision("report", GUARD_NAME, attributes=attributes, reason=(
                f"{metric} projected to pass {_num(limit)} at call {projected_step} "
                f"of {budget.max_model_calls} (projected {_num(total)})"))
        return None

    def _deny(self, metric: str, limit: float, spent: float, prediction: float, fit: LoopFit,
              step: int, projected_step: int | None = None,
              projected_total: float | None = None, reserved: float = 0.0) -> Decision:
        error = LoopBudgetExceeded(metric, limit, spent, prediction, fit, step,
                                   projected_step, projected_total, reserved)
        attributes = self._attributes(metric, limit, spent, prediction, fit, step)
        if reserved:
            attributes[sc.GUARDRAIL_RESERVED] = reserved
        if projected_step is not None:
            attributes[sc.BUDGET_PROJECTED_STEP] = projected_step
            attributes[sc.BUDGET_PROJECTED_TOTAL] = projected_total or 0.0
        return Decision("deny", GUARD_NAME, str(error), attributes, error)

    @staticmethod
    def _attributes(metric: str, limit: float, spent: float, prediction: float,
                    fit: LoopFit, step: int) -> dict[str, Any]:
        return {sc.BUDGET_METRIC: metric, sc.GUARDRAIL_LIMIT: limit,
                sc.GUARDRAIL_SPEND: spent, sc.GUARDRAIL_PREDICTION: prediction,
                sc.BUDGET_STEP: step, sc.BUDGET_FIT_S: fit.s, sc.BUDGET_FIT_U: fit.u,
                sc.BUDGET_FIT_R: fit.r}


def build_loop_budget_guards(policy: Policy, store: Store | None = None) -> Sequence[Guard]:
    """The policy's loop budget guard (it keeps its state on the run: no store)."""
    if policy.loop_budget is None:
        return []
    return [LoopBudgetGuard(policy.loop_budget, policy.usage.reservation_expiry)]
