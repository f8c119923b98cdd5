"""A policy's guards come from one function, in one documented order, with one store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import pytest

from spanguard.errors import ConfigError
from spanguard.guardrails import (
    Decision,
    Guard,
    GuardrailViolation,
    HoldPending,
    HoldRules,
    LoopBudget,
    Policy,
    ReadBackCheck,
    RunState,
    StoreConfig,
    ToolCall,
    ToolLoop,
    ToolLoopDetected,
    Verification,
    WindowBudget,
)
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.holds import HoldGuard
from spanguard.guardrails.pipeline import PARTS, build_guards
from spanguard.guardrails.stores import MemoryStore, SQLiteStore
from spanguard.guardrails.verify import VerifyGuard
from spanguard.guardrails.window import WindowBudgetGuard
from tests.conftest import repo_root

EVERY_PART = Policy(
    loop_budget=LoopBudget(max_input_tokens=100_000),
    window_budgets=(WindowBudget("daily", "tenant", max_model_calls=100),),
    tool_loop=ToolLoop(identical_calls=3),
    holds=HoldRules(tools=("payments_*",)),
    verify=Verification({"git_commit": ReadBackCheck("git_log")}, hold_on_failure=True),
    store=StoreConfig("memory://pipeline-order"),
)
DOCUMENTED_ORDER = ["loop_budget", "window_budget", "tool_loop", "holds", "verify"]
G = TypeVar("G", bound=Guard)

# In a fresh interpreter: import the guard modules in the order given on the
# command line, then build the guards of a policy file with every part.
_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from spanguard.guardrails.pipeline import build_guards
from spanguard.guardrails.policy import Policy
policy = Policy.from_mapping({
    "loop_budget": {"max_input_tokens": 100000},
    "window_budgets": {"daily": {"scope": "tenant", "max_model_calls": 100}},
    "tool_loop": {"identical_calls": 3},
    "holds": {"tools": ["payments_*"]},
    "verify": {"hold_on_failure": True, "git_commit": {"call": "git_log"}},
    "store": {"url": "memory://probe"},
})
print(json.dumps([guard.name for guard in build_guards(policy)]))
"""
_GUARD_MODULES = ["spanguard.guardrails.budget", "spanguard.guardrails.window",
                  "spanguard.guardrails.toolloop", "spanguard.guardrails.holds",
                  "spanguard.guardrails.verify", "spanguard.guardrails.enforcer",
                  "spanguard.guardrails.policy", "spanguard.guardrails.pipeline"]


class _Named(Guard):
    def __init__(self, name: str) -> None:
        self.name = name


def _names_after_importing(modules: list[str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True,
                            text=True, cwd=repo_root(), check=False)
    assert result.returncode == 0, result.stderr
    names: list[str] = json.loads(result.stdout)
    return names


def test_guards_run_in_the_documented_order() -> None:
    assert [guard.name for guard in build_guards(EVERY_PART)] == DOCUMENTED_ORDER


@pytest.mark.parametrize("order", ["as listed", "reversed"])
def test_guard_order_does_not_depend_on_import_order(order: str) -> None:
    modules = _GUARD_MODULES if order == "as listed" else _GUARD_MODULES[::-1]
    assert _names_after_importing(modules) == DOCUMENTED_ORDER


def test_user_guards_run_after_spanguards_own_in_the_order_given() -> None:
    policy = Policy(tool_loop=ToolLoop(), guards=(_Named("second"), _Named("first")))
    assert [g.name for g in build_guards(policy)] == ["tool_loop", "second", "first"]
    assert [g.name for g in Enforcer(policy).guards] == ["tool_loop", "second", "first"]


def test_policy_guards_accept_a_list_and_refuse_what_is_not_a_guard() -> None:
    assert Policy(guards=[_Named("mine")]).guards[0].name == "mine"  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="guards must be a sequence of Guard objects"):
        Policy(guards=(lambda run, call: None,))  # type: ignore[arg-type]


def test_parts_select_a_subset_in_the_same_order() -> None:
    policy = EVERY_PART.with_parts(guards=(_Named("mine"),))
    assert [g.name for g in build_guards(policy, parts=("verify", "holds"))] == [
        "holds", "verify"]
    assert [g.name for g in build_guards(policy, parts=("guards", "loop_budget"))] == [
        "loop_budget", "mine"]
    assert [g.name for g in build_guards(policy, parts=PARTS)] == [*DOCUMENTED_ORDER, "mine"]


@pytest.mark.parametrize(("parts", "message"), [
    (("holds", "approval"), "unknown part(s) ['approval']"),
    ("holds", "parts must be a collection of names"),
])
def test_unknown_parts_are_refused(parts: object, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build_guards(EVERY_PART, parts=parts)  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_a_call_the_loop_detector_refuses_leaves_no_approval_request() -> None:
    """Cheap refusals come before holds: a refused call never waits for a checker."""
    store = MemoryStore()
    policy = Policy(tool_loop=ToolLoop(identical_calls=2), holds=HoldRules(tools=("pay",)))
    enforcer = Enforcer(policy, store=store)
    run = enforcer.start_run("r", identity="agent")
    with pytest.raises(HoldPending):
        enforcer.before_tool_call(run, ToolCall("pay", {"to": "bob"}), None)
    with pytest.raises(ToolLoopDetected):
        enforcer.before_tool_call(run, ToolCall("pay", {"to": "bob"}), None)
    assert len(store.holds.list()) == 1


def test_one_store_given_to_the_enforcer_serves_every_guard_and_the_audit_log(
        spanguard_home: Path) -> None:
    store = MemoryStore()
    enforcer = Enforcer(EVERY_PART.with_parts(guards=(_Refusing(),)), store=store)
    assert _only(enforcer, WindowBudgetGuard).store is store.budgets
    assert _only(enforcer, HoldGuard).approvals.store is store.holds
    verify = _only(enforcer, VerifyGuard)
    assert verify.approvals.store is store.holds
    run = enforcer.start_run("r", identity="agent")
    with pytest.raises(GuardrailViolation, match="refused by the test"):
        enforcer.before_tool_call(run, ToolCall("ls", {}), None)
    verify.approvals.audit.append("verification.verified", subject="git_commit")
    assert [r.event for r in store.audit.records()] == ["refuser.refused",
                                                         "verification.verified"]
    assert not (spanguard_home / "guardrails.db").exists()  # the default was never opened


def test_guards_built_from_a_policy_share_the_store_its_url_names(tmp_path: Path) -> None:
    policy = EVERY_PART.with_parts(store=StoreConfig(f"sqlite://{tmp_path / 'shared.db'}"))
    enforcer = Enforcer(policy)
    shared = _only(enforcer, WindowBudgetGuard).store.store  # type: ignore[attr-defined]
    assert isinstance(shared, SQLiteStore) and shared.path == tmp_path / "shared.db"
    assert _only(enforcer, HoldGuard).approvals.store.store is shared  # type: ignore[attr-defined]
    assert _only(enforcer, VerifyGuard).approvals.store.store is shared  # type: ignore[attr-defined]


class _Refusing(Guard):
    name = "refuser"

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        return Decision("deny", self.name, "refused by the test")


def _only(enforcer: Enforcer, kind: type[G]) -> G:
    [guard] = [g for g in enforcer.guards if isinstance(g, kind)]
    return guard
