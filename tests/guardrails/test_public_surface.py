"""``spanguard.guardrails`` exports what users build policies from; 0.1 names still work."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings

import pytest

import spanguard.guardrails as guardrails
from spanguard.guardrails import _MOVED
from tests.conftest import repo_root

PUBLIC = {
    # the policy and its parts
    "Policy", "load_policy", "LoopBudget", "WindowBudget", "ToolLoop", "HoldRules",
    "Verification", "ReadBackCheck", "RetryPolicy", "StoreConfig", "Reviewer", "Reviewers",
    "AuditKeys",
    # refusals users catch
    "GuardrailViolation", "LoopBudgetExceeded", "WindowBudgetExceeded",
    "BudgetStoreUnavailable", "ToolLoopDetected", "HoldPending", "HoldRejected",
    "HoldAlreadyUsed", "HoldError", "VerificationFailed", "AllRoutesFailed",
    "ApprovalError", "HoldConflict", "HoldExpired", "HoldNotFound", "MakerCheckerViolation",
    "ApprovalRefused", "InvalidMaker", "InvalidIdentity", "UnsignedApproval",
    "ReviewerNotAllowed",
    # the checker's API and the store
    "approve", "reject", "list_holds", "get_hold", "wait_for_decision", "HoldRecord",
    "open_store",
    # writing a guard of one's own
    "Guard", "Decision", "RunState", "ModelCall", "ModelUsage", "ToolCall", "ToolOutcome",
}


def test_the_public_names_are_the_documented_ones() -> None:
    assert set(guardrails.__all__) == PUBLIC
    for name in PUBLIC:
        assert name in vars(guardrails), name  # defined, not served by __getattr__


@pytest.mark.parametrize("name", sorted(_MOVED))
def test_a_moved_name_still_imports_with_one_warning_naming_its_module(name: str) -> None:
    module = _MOVED[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(guardrails, name)
    assert value is getattr(importlib.import_module(module), name)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert f"from {module} import {name}" in str(caught[0].message)
    assert caught[0].filename == __file__  # the warning points at the caller


def test_from_import_of_a_moved_name_warns_too() -> None:
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match="spanguard.guardrails.enforcer"):
        exec("from spanguard.guardrails import Enforcer", namespace)
    from spanguard.guardrails.enforcer import Enforcer

    assert namespace["Enforcer"] is Enforcer


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = guardrails.NoSuchThing  # type: ignore[attr-defined]
    assert not hasattr(guardrails, "GUARD_BUILDERS")


def test_type_checkers_see_the_same_moved_names() -> None:
    """The TYPE_CHECKING re-exports in __init__ list exactly the names __getattr__ serves."""
    tree = ast.parse((repo_root() / "guardrails" / "__init__.py").read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module is not None
                for alias in stmt.names:
                    assert alias.asname == alias.name
                    typed[alias.name] = stmt.module
    assert typed == _MOVED


@pytest.mark.parametrize(("module", "names"), [
    ("spanguard.guardrails.stores", ["BudgetStore", "MemoryBudgetStore", "SQLiteBudgetStore",
                                     "RedisBudgetStore", "StoreConfig", "open_budget_store",
                                     "check_store_url"]),
    ("spanguard.guardrails.hold_store", ["HoldRecord", "HoldStore", "MemoryHoldStore",
                                         "open_hold_store", "resolve_store_url"]),
    ("spanguard.guardrails.audit", ["AuditLog", "AuditRecord", "MemoryAuditBackend",
                                    "open_audit_log", "SELF_AUDITING_GUARDS"]),
    ("spanguard.guardrails.enforcer", ["Enforcer", "Guard"]),
    ("spanguard.guardrails.holds_cli", ["register"]),
    ("spanguard.guardrails.audit_cli", ["register"]),
])
def test_01_module_paths_keep_their_names(module: str, names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imported = importlib.import_module(module)
    for name in names:
        assert hasattr(imported, name), f"{module}.{name}"


def test_importing_the_package_itself_raises_no_warning() -> None:
    code = "import spanguard.guardrails, spanguard.guardrails.pipeline"
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                            capture_output=True, text=True, cwd=repo_root(), check=False)
    assert result.returncode == 0, result.stderr
