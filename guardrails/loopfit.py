"""The fit of one run's per-call input tokens: ``t_k = S + u*k + r*R_k``, all non-negative.

An agent loop re-sends its growing history on every call, so call k's input is
about ``t_k = S + u*k + r*R_k`` tokens (S: static prompt and tool schemas; u:
growth per turn; r: extra growth per repair/retry turn; R_k: repair turns among
calls 1..k) and the run's cumulative input grows quadratically. DESIGN.md writes
the case where every turn after the first is a repair (R_k = k-1):
``T(N) = N*S + u*N(N+1)/2 + r*N(N-1)/2``.

The fit is least squares from running integer sums (O(1) per call, no arrays),
constrained to S, u, r >= 0: a prompt has no negative size, a turn never shrinks
the history and a repair never shrinks it either. The unconstrained solution is
used when it is non-negative (nearly always; its signs are decided on integer
numerators, so exactly); otherwise every subset of the three parameters is
solved with the others at 0 and the feasible one with the smallest residual
wins, which is the constrained optimum. Each solve is Cramer's rule on integers,
so singularity (no repairs, or only repairs: r cannot be told apart) and ties
are decided exactly, never by a tolerance; ties go to the simpler reading
(r = 0, or r folded into u). With one call, u is that call's reply (the
next call re-sends it) and S what is left of the call's input, at least 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spanguard.guardrails.steps import RunState

_FIT_KEY = "spanguard.loop_fit"

# Parameter subsets (0: S, 1: u, 2: r), the full fit first, then in the order ties
# are settled: r = 0 before S = 0 before u = 0.
_SUBSETS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (0, 1), (1, 2), (0, 2), (1,), (0,), (2,))


class LoopFit:
    """Running least-squares sums for one run's per-call input tokens."""

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
        n = self.n
        if n == 1:
            self.u, self.r = float(max(self.last_out, 0)), 0.0
            self.s = max(self.spent - self.u, 0.0)
            self.sd = None
            return
        solved = self._unconstrained()
        if solved is None:
            solved = self._constrained()
        self.s, self.u, self.r, params, sse = solved
        dof = n - params
        self.sd = math.sqrt(max(sse, 0.0) / dof) if dof > 0 else None

    def _unconstrained(self) -> tuple[float, float, float, int, float] | None:
        """The least-squares fit (r only when it can be told apart), or None when a
        parameter would be negative. Integer numerators decide the signs exactly."""
        n, sk, sr, st = self.n, self._sk, self._sr, self.spent
        skk = n * self._skk - sk * sk
        srr = n * self._srr - sr * sr
        skr = n * self._skr - sk * sr
        skt = n * self._skt - sk * st
        srt = n * self._srt - sr * st
        det = skk * srr - skr * skr
        if det != 0:
            u_num = srr * skt - skr * srt
            r_num = skk * srt - skr * skt
            s_num = st * det - u_num * sk - r_num * sr  # S = s_num / (n * det)
            if det < 0:
                u_num, r_num, s_num, det = -u_num, -r_num, -s_num, -det
            if min(u_num, r_num, s_num) < 0:
                return None
            s, u, r, params = s_num / (n * det), u_num / det, r_num / det, 3
        else:  # no repairs, or only repairs: r cannot be told apart from S and u
            s_num = st * skk - skt * sk  # S = s_num / (n * skk); skk > 0 from 2 calls on
            if skt < 0 or s_num < 0:
                return None
            s, u, r, params = s_num / (n * skk), skt / skk, 0.0, 2
        explained = s * st + u * self._skt + r * self._srt
        return s, u, r, params, self._st2 - explained

    def _constrained(self) -> tuple[float, float, float, int, float]:
        """The best fit with every parameter >= 0: each subset of (S, u, r) solved with
        the others at 0, the feasible one with the smallest residual (ties: the order
        of :data:`_SUBSETS`)."""
        normal = ((self.n, self._sk, self._sr), (self._sk, self._skk, self._skr),
                  (self._sr, self._skr, self._srr))
        rhs = (self.spent, self._skt, self._srt)
        best: tuple[float, tuple[int, ...], list[float]] | None = None
        for subset in _SUBSETS:
            solved = _solve(normal, rhs, subset, self._st2)
            if solved is not None and (best is None or solved[0] < best[0]):
                best = (solved[0], subset, solved[1])
        assert best is not None  # (S,): the mean input, >= 0, is always feasible
        sse, subset, values = best
        params = [0.0, 0.0, 0.0]
        for index, value in zip(subset, values, strict=True):
            params[index] = value
        return params[0], params[1], params[2], len(subset), sse

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


Matrix = tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]


def _solve(normal: Matrix, rhs: tuple[int, int, int], subset: tuple[int, ...],
           st2: int) -> tuple[float, list[float]] | None:
    """Least squares on the parameters in ``subset`` (the others 0): (residual sum of
    squares, values), or None when singular or when a value would be negative."""
    a = [[normal[i][j] for j in subset] for i in subset]
    b = [rhs[i] for i in subset]
    det = _det(a)
    if det == 0:
        return None
    numerators = []
    for column in range(len(subset)):
        replaced = [[*row[:column], b[i], *row[column + 1:]] for i, row in enumerate(a)]
        numerator = _det(replaced)
        if numerator * det < 0:
            return None
        numerators.append(numerator)
    # Exact: sse * det = st2 * det - sum(numerator_i * b_i).
    sse = (st2 * det - sum(num * b_i for num, b_i in zip(numerators, b, strict=True))) / det
    return sse, [num / det for num in numerators]


def _det(m: list[list[int]]) -> int:
    if len(m) == 1:
        return m[0][0]
    if len(m) == 2:
        return m[0][0] * m[1][1] - m[0][1] * m[1][0]
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
