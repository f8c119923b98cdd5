"""From a ``Policy`` to its guards, in one fixed order, by one function.

:func:`build_guards` is the only place that decides which guards a policy gets
and the order the :class:`~spanguard.guardrails.enforcer.Enforcer` asks them in.
Nothing is registered at import time, so the order is the one written here,
whatever was imported first:

1. ``loop_budget``: the run's own limits, a computation on the run's state.
2. ``window_budget``: session/user/tenant limits, one atomic reservation in the
   shared store (a model call's budget reservation is settled by the same guard
   after the call).
3. ``tool_loop``: a repeated or no-progress tool call, a counter on the run.
4. ``holds``: maker-checker approval, which *creates an approval request* and asks
   a person. It comes after every cheap refusal above: a call that a budget or
   the loop detector refuses anyway must not leave a request behind for a
   checker to approve.
5. ``verify``: read-back verification; it acts only after a tool call, so its
   place among the before-call guards does not matter, and after the holds it
   reads naturally: it may suspend a tool that the hold guard then holds.
6. The policy's own ``guards`` (``Policy(guards=(MyGuard(),))``), in the order
   given: user guards see only steps that spanguard's guards admitted.

Within a hook the first guard that refuses stops the step (the enforcer raises),
so a later guard never sees a step an earlier one refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from spanguard.errors import ConfigError
from spanguard.guardrails.budget import build_loop_budget_guards
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.holds import build_hold_guards
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.stores import Store
from spanguard.guardrails.toolloop import build_tool_loop_guards
from spanguard.guardrails.verify import build_verify_guards
from spanguard.guardrails.window import build_window_guards

Builder = Callable[[Policy, Store | None], Sequence[Guard]]

# (part name, builder), in the order the guards run. A tuple: fixed at import.
BUILDERS: tuple[tuple[str, Builder], ...] = (
    ("loop_budget", build_loop_budget_guards),
    ("window_budget", build_window_guards),
    ("tool_loop", build_tool_loop_guards),
    ("holds", build_hold_guards),
    ("verify", build_verify_guards),
)
USER_GUARDS = "guards"
PARTS: tuple[str, ...] = (*(name for name, _ in BUILDERS), USER_GUARDS)


def build_guards(policy: Policy, store: Store | None = None, *,
                 parts: Collection[str] | None = None) -> tuple[Guard, ...]:
    """The guards ``policy`` configures, in the order documented above.

    ``store`` is the one store every guard that keeps records uses (window
    budgets, holds, verification suspensions, their audit records); None opens
    the policy's ``[store]`` URL (else ``SPANGUARD_STORE_URL``, else the SQLite
    default) through :func:`~spanguard.guardrails.stores.open_store`, which
    returns one shared store per URL. ``parts`` builds only the named parts
    (from :data:`PARTS`); a hold gate uses ``("holds", "verify")``.
    """
    wanted = PARTS if parts is None else _checked(parts)
    guards = [guard for name, build in BUILDERS if name in wanted
              for guard in build(policy, store)]
    if USER_GUARDS in wanted:
        guards.extend(policy.guards)
    return tuple(guards)


def _checked(parts: Collection[str]) -> Collection[str]:
    if isinstance(parts, str):
        raise ConfigError("build_guards", f"parts must be a collection of names, got {parts!r}",
                          f"write parts=({parts!r},)")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ConfigError("build_guards", f"unknown part(s) {unknown}",
                          f"known parts: {', '.join(PARTS)}")
    return parts
