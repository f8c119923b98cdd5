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
4. ``tool_arguments``: arguments that do not match the tool's declared schema.
   After the loop detector, so a model that repeats the same malformed call is
   still caught as a loop (every attempt is counted); before the holds, so a
   call that cannot run as made never becomes an approval request.
5. ``holds``: maker-checker approval, which *creates an approval request* and asks
   a person. It comes after every cheap refusal above: a call that a budget, the
   loop detector or the schema check refuses anyway must not leave a request
   behind for a checker to approve. The review floor (``[review]``) is checked
   here, between reading an approval and spending it.
6. ``verify``: read-back verification; it acts only after a tool call, so its
   place among the before-call guards does not matter, and after the holds it
   reads naturally: it may suspend a tool that the hold guard then holds.
7. ``tenant_scope``: another tenant's retrieved documents or tool result. It
   acts after a retrieval or a tool call; before ``citations``, so a document
   withheld from the model never counts as retrieved for the answer.
8. ``citations``: records the run's retrieved ids, then checks the answer's.
9. ``structured_output``: unparseable or invalid structured output (its own
   hook, asked by the structured-output adapters); last of spanguard's, since
   it judges the model's final product.
10. The policy's own ``guards`` (``Policy(guards=(MyGuard(),))``), in the order
    given: user guards see only steps that spanguard's guards admitted.

Within a hook the first guard that refuses stops the step (the enforcer raises),
so a later guard never sees a step an earlier one refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from spanguard.errors import ConfigError
from spanguard.guardrails.budget import build_loop_budget_guards
from spanguard.guardrails.citations import build_citation_guards
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.holds import build_hold_guards
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.stores import Store
from spanguard.guardrails.structured import build_structured_output_guards
from spanguard.guardrails.tenant_scope import build_tenant_scope_guards
from spanguard.guardrails.tool_arguments import build_tool_argument_guards
from spanguard.guardrails.toolloop import build_tool_loop_guards
from spanguard.guardrails.verify import build_verify_guards
from spanguard.guardrails.window import build_window_guards

Builder = Callable[[Policy, Store | None], Sequence[Guard]]

# (part name, builder), in the order the guards run. A tuple: fixed at import.
BUILDERS: tuple[tuple[str, Builder], ...] = (
    ("loop_budget", build_loop_budget_guards),
    ("window_budget", build_window_guards),
    ("tool_loop", build_tool_loop_guards),
    ("tool_arguments", build_tool_argument_guards),
    ("holds", build_hold_guards),
    ("verify", build_verify_guards),
    ("tenant_scope", build_tenant_scope_guards),
    ("citations", build_citation_guards),
    ("structured_output", build_structured_output_guards),
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
