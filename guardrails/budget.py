"""Per-run loop budgets that refuse a model call *before* the provider sees it.

An agent loop re-sends its growing history on every call, so call k's input is
about ``t_k = S + u*k + r*R_k`` tokens (S: static prompt and tool schemas; u:
growth per turn; r: extra growth per repair/retry turn; R_k: repair turns among
calls 1..k) and the run's cumulative input grows quadratically. DESIGN.md writes
the case where every turn after the first is a repair (R_k = k-1):
``T(N) = N*S + u*N(N+1)/2 + r*N(N-1)/2``.

Before each call the guard fits S, u, r by least squares on the calls seen so
far (running sums: O(1) per call, no arrays), predicts the next call's input
with a safety margin, and refuses when spend + prediction would pass a limit.
Admitting only what is predicted to fit is what keeps the run *under* the limit:
checking after the fact would let the breaching call through.

Identifiability: with no retries (or only retries) R is constant (or k - 1), so
r cannot be told apart from S and u; the fit then has two parameters and r is 0
(or folded into u). With 0, 1 and 2 observations the fallbacks are: the
caller's estimate; the last call plus its reply (which the next call re-sends);
the straight line through both points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spanguard import semconv as sc
from spanguard.guardrails import _parse
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.steps import Decision, ModelCall, RunState, ToolCall
from spanguard.guardrails.stores.contracts import fits

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy
    from spanguard.guardrails.stores import Store

GUARD_NAME = "loop_budget"
_FIT_KEY = "spanguard.loop_fit"
_MIN_CALLS_TO_PROJECT = 3

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
    """The next model call would pass (or is projected to pass) a run's limit.

    Carries what the message says: ``metric``, ``limit``, ``spent``,
    ``prediction``, the fitted ``s``/``u``/``r``, the ``step`` refused and, for an
    early stop, ``projected_step``/``projected_total``.
    """

    guard = GUARD_NAME
    error_type = "loop_budget_exceeded"

    def __init__(self, metric: str, limit: float, spent: float, prediction: float,
                 fit: LoopFit, step: int, projected_step: int | None = None,
                 projected_total: float | None = None) -> None:
        self.metric = metric
        self.limit = limit
        self.spent = spent
        self.prediction = prediction
        self.s, self.u, self.r = fit.s, fit.u, fit.r
        self.step = step
        self.projected_step = projected_step
        self.projected_total = projected_total
        fitted = (f"fitted t_k = S + u*k + r*R_k with S={fit.s:,.0f}, u={fit.u:,.0f}, "
                  f"r={fit.r:,.0f} from {fit.n} call(s)")
        if projected_step is None:
            what = (f"model call {step} would bring {metric} to "
                    f"{_num(spent + prediction)} (spent {_num(spent)} + predicted "
                    f"{_num(prediction)}), over the limit of {_num(limit)}")
        else:
            what = (f"{metric} is projected to pass the limit of {_num(limit)} at call "
                    f"{projected_step} (projected {_num(projected_total or 0.0)}; spent "
                    f"{_num(spent)}, next call predicted {_num(prediction)}) and "
                    "stop_on_projected_breach is set")
        super().__init__(f"loop budget exceeded: {what}; {fitted}. The call was not sent "
                         f"and the run's {fit.n} completed call(s) are kept; raise the "
                         "limit in [loop_budget] or shorten the loop")


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() or value >= 100 else f"{value:,.4f}"


class LoopFit:
    """Running least-squares sums for one run's per-call input tokens.

    Regressors: 1, k (call index) and R_k (repair turns so far); the normal
    equations are solved in closed form from integer sums, so singularity (no
    repairs, or only repairs) is detected exactly, not by a tolerance.
    """

    __slots__ = (
        "_cache",
        "_sk",
        "_skk",
        "_skr",
        "_skt",
        "_sr",
        "_srr",
        "_srt",
        "_st2",
        "last_out",
        "max_out",
        "n",
        "out_seen",
        "r",
        "reported",
        "retries",
        "s",
        "sd",
        "spent",
        "u",
    )

    def __init__(self) -> None:
        self.n = 0
        self.retries = 0
        self.spent = 0
        self.out_seen = 0
        self.last_out = 0
        self.max_out = 0
        self.reported = False
        self.s = self.u = self.r = 0.0
        self.sd: float | None = None
        self._sk = self._sr = self._skk = self._skr = self._srr = 0
        self._skt = self._srt = self._st2 = 0
        self._cache: tuple[bool, float, float, float] | None = None

    def absorb(self, run: RunState) -> None:
        """Take in the calls the run has completed since the last look, then refit."""
        tokens = run.input_tokens
        if len(tokens) == self.n:
            return
        flags = run.retry_flags
        for i in range(self.n, len(tokens)):
            t = tokens[i]
            k = i + 1
            if i < len(flags) and flags[i]:
                self.retries += 1
            rk = self.retries
            self._sk += k
            self._sr += rk
            self._skk += k * k
            self._skr += k * rk
            self._srr += rk * rk
            self._skt += k * t
            self._srt += rk * t
            self._st2 += t * t
            self.spent += t
        self.n = len(tokens)
        out = run.output_tokens - self.out_seen
        self.out_seen = run.output_tokens
        self.last_out = out
        self.max_out = max(self.max_out, out)
        self._cache = None
        self._refit()

    def _refit(self) -> None:
        n, st = self.n, self.spent
        if n == 1:
            self.u, self.r = float(self.last_out), 0.0
            self.s = st - self.u
            self.sd = None
            return
        skk = n * self._skk - self._sk * self._sk
        srr = n * self._srr - self._sr * self._sr
        skr = n * self._skr - self._sk * self._sr
        skt = n * self._skt - self._sk * st
        srt = n * self._srt - self._sr * st
        det = skk * srr - skr * skr
        params = 2
        if n >= 3 and det != 0:
            self.u = (srr * skt - skr * srt) / det
            self.r = (skk * srt - skr * skt) / det
            params = 3
        if params == 2 or self.r < 0:  # a repair never shrinks the prompt: refit with r = 0
            self.u = skt / skk
            self.r = 0.0
            params = 2
        self.s = (st - self.u * self._sk - self.r * self._sr) / n
        dof = n - params
        if dof <= 0:
            self.sd = None
            return
        explained = self.s * st + self.u * self._skt + self.r * self._srt
        self.sd = math.sqrt(max(self._st2 - explained, 0.0) / dof)

    def point(self, k: int, repairs: float) -> float:
        """Fitted input tokens of call ``k`` after ``repairs`` repair turns."""
        return self.s + self.u * k + self.r * repairs

    def next_input(self, is_retry: bool, sigmas: float, fraction: float) -> float:
        """Predicted input of the next call, with the safety margin added."""
        if self.n == 0:
            return 0.0
        cache = self._cache
        if (cache is not None and cache[0] == is_retry and cache[1] == sigmas
                and cache[2] == fraction):
            return cache[3]
        k = self.n + 1
        point = max(self.point(k, self.retries + is_retry), 0.0)
        margin = fraction * point
        if self.sd is not None:
            mean_k = self._sk / self.n
            spread = (self._skk - self._sk * mean_k) or 1.0
            leverage = math.sqrt(1.0 + 1.0 / self.n + (k - mean_k) ** 2 / spread)
            margin = max(margin, sigmas * self.sd * leverage)
        self._cache = (is_retry, sigmas, fraction, point + margin)
        return point + margin

    def growth(self) -> tuple[float, float]:
        """(next call's fitted input, per-call increase) assuming the repair rate so far."""
        rate = self.retries / (self.n - 1) if self.n > 1 else 0.0
        first = self.point(self.n + 1, self.retries + rate)
        return first, self.u + self.r * rate

    def project(self, calls: int) -> float:
        """Fitted cumulative input after ``calls`` more calls (no margin)."""
        first, step = self.growth()
        return self.spent + first * calls + step * calls * (calls - 1) / 2


def loop_fit(run: RunState) -> LoopFit:
    """The run's fit, brought up to date; shared by every guard that predicts usage."""
    fit: LoopFit | None = run.scratch.get(_FIT_KEY)
    if fit is None:
        fit = run.scratch[_FIT_KEY] = LoopFit()
    fit.absorb(run)
    return fit


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

    def __init__(self, budget: LoopBudget) -> None:
        self.budget = budget

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        budget = self.budget
        fit = loop_fit(run)
        step = fit.n + 1
        predicted = fit.next_input(call.is_retry, budget.margin_sigmas, budget.margin_fraction)
        if call.estimated_input_tokens is not None:
            predicted = max(predicted, float(call.estimated_input_tokens))
        tightest = None
        headroom = math.inf
        for metric, limit, spent, prediction in self._checks(run, fit, predicted):
            if not fits(spent, prediction, limit):
                return self._deny(metric, limit, spent, prediction, fit, step)
            room = (limit - spent - prediction) / limit if limit else 0.0
            if room < headroom:
                tightest, headroom = (metric, limit, spent, prediction), room
        if tightest is None:
            return None
        metric, limit, spent, prediction = tightest
        projection = self._projection(run, fit, step)
        if projection is not None:
            return projection
        # Allow events stay small (each attribute costs the SDK ~1-2 us per call);
        # the fit and step go on report/deny decisions, where they explain something.
        return Decision("allow", GUARD_NAME, attributes={
            sc.BUDGET_METRIC: metric, sc.GUARDRAIL_LIMIT: limit, sc.GUARDRAIL_SPEND: spent,
            sc.GUARDRAIL_PREDICTION: prediction})

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        limit = self.budget.max_tool_calls
        if limit is None or run.tool_calls <= limit:
            return None
        fit = loop_fit(run)
        return self._deny(METRIC_TOOL_CALLS, limit, run.tool_calls - 1, 1, fit, fit.n + 1)

    def _checks(self, run: RunState, fit: LoopFit,
                predicted: float) -> list[tuple[str, float, float, float]]:
        budget = self.budget
        checks: list[tuple[str, float, float, float]] = []
        if budget.max_input_tokens is not None:
            checks.append((METRIC_INPUT, budget.max_input_tokens, fit.spent, predicted))
        if budget.max_total_tokens is not None:
            checks.append((METRIC_TOTAL, budget.max_total_tokens,
                           fit.spent + run.output_tokens, predicted + fit.max_out))
        if budget.max_cost_usd is not None:
            tokens = fit.spent + run.output_tokens
            rate = run.cost_usd / tokens if tokens else 0.0
            checks.append((METRIC_COST, budget.max_cost_usd, run.cost_usd,
                           rate * (predicted + fit.max_out)))
        if budget.max_model_calls is not None:
            checks.append((METRIC_CALLS, budget.max_model_calls, fit.n, 1))
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
              projected_total: float | None = None) -> Decision:
        error = LoopBudgetExceeded(metric, limit, spent, prediction, fit, step,
                                   projected_step, projected_total)
        attributes = self._attributes(metric, limit, spent, prediction, fit, step)
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
    return [] if policy.loop_budget is None else [LoopBudgetGuard(policy.loop_budget)]
