"""Policies and enforcement: budgets, loop detection, holds, verification, retries.

What is here is what a user builds a policy from and catches: the ``Policy`` and
its parts, the refusals, the checker's API, the store opener, and the interface
of a guard of one's own. Framework-free: guards see
:mod:`spanguard.guardrails.steps` descriptions and answer with decisions; the
adapters in ``spanguard.plugins`` and ``spanguard.mcp_bridge`` carry them out,
through :class:`spanguard.guardrails.enforcer.Enforcer`. Importing this package
registers nothing: a policy's guards and their order come from
:func:`spanguard.guardrails.pipeline.build_guards`.

The other 0.1 names (``Enforcer``, ``HoldGuard``, ``open_budget_store``, ...)
still import from here, with a ``DeprecationWarning`` naming their module.
"""

from typing import TYPE_CHECKING

from spanguard.guardrails._deprecated import moved_names
from spanguard.guardrails.approvals import (
    ApprovalError,
    HoldConflict,
    HoldExpired,
    HoldNotFound,
    InvalidIdentity,
    MakerCheckerViolation,
    ReviewerNotAllowed,
    UnsignedApproval,
    approve,
    get_hold,
    list_holds,
    reject,
    wait_for_decision,
)
from spanguard.guardrails.audit_keys import AuditKeys
from spanguard.guardrails.budget import LoopBudget, LoopBudgetExceeded
from spanguard.guardrails.errors import AllRoutesFailed, GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.holds import (
    ApprovalRefused,
    HoldAlreadyUsed,
    HoldError,
    HoldPending,
    HoldRejected,
    HoldRules,
    InvalidMaker,
)
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.retry import RetryPolicy
from spanguard.guardrails.reviewers import Reviewer, Reviewers
from spanguard.guardrails.steps import (
    Decision,
    ModelCall,
    ModelUsage,
    RunState,
    ToolCall,
    ToolOutcome,
)
from spanguard.guardrails.stores import StoreConfig, open_store
from spanguard.guardrails.stores.records import HoldRecord
from spanguard.guardrails.toolloop import ToolLoop, ToolLoopDetected
from spanguard.guardrails.verify import ReadBackCheck, Verification, VerificationFailed
from spanguard.guardrails.window import (
    BudgetStoreUnavailable,
    WindowBudget,
    WindowBudgetExceeded,
)

# The moved names keep their types for 0.1 code that type-checks (`X as X` marks a
# re-export); at run time they come from __getattr__ below, with the warning.
# isort: off
if TYPE_CHECKING:
    from spanguard.guardrails.approvals import Approvals as Approvals
    from spanguard.guardrails.audit import (
        AuditCheck as AuditCheck, AuditLog as AuditLog, AuditRecord as AuditRecord,
        open_audit_log as open_audit_log,
    )
    from spanguard.guardrails.budget import LoopBudgetGuard as LoopBudgetGuard
    from spanguard.guardrails.circuit import (
        CircuitBreaker as CircuitBreaker, CircuitBreakers as CircuitBreakers,
    )
    from spanguard.guardrails.enforcer import Enforcer as Enforcer
    from spanguard.guardrails.errors import RouteFailure as RouteFailure
    from spanguard.guardrails.gating import (
        GatedCall as GatedCall, gate_for as gate_for, gated as gated,
    )
    from spanguard.guardrails.hold_store import open_hold_store as open_hold_store
    from spanguard.guardrails.holds import (
        HoldGuard as HoldGuard, hold_result_payload as hold_result_payload,
    )
    from spanguard.guardrails.retry import (
        ToolCallNotRetried as ToolCallNotRetried, aretry_tool_call as aretry_tool_call,
        retry_tool_call as retry_tool_call, tool_retry_allowed as tool_retry_allowed,
    )
    from spanguard.guardrails.routing import (
        Attempt as Attempt, Router as Router, RoutingOutcome as RoutingOutcome,
    )
    from spanguard.guardrails.stores import (
        BudgetStore as BudgetStore, HoldStore as HoldStore,
        MemoryBudgetStore as MemoryBudgetStore, RedisBudgetStore as RedisBudgetStore,
        SQLiteBudgetStore as SQLiteBudgetStore, open_budget_store as open_budget_store,
    )
    from spanguard.guardrails.toolloop import ToolLoopGuard as ToolLoopGuard
    from spanguard.guardrails.verify import (
        VerificationResult as VerificationResult, VerifyGuard as VerifyGuard,
        record_verification as record_verification, verification_of as verification_of,
    )
    from spanguard.guardrails.window import WindowBudgetGuard as WindowBudgetGuard
# isort: on

__all__ = [
    "AllRoutesFailed",
    "ApprovalError",
    "ApprovalRefused",
    "AuditKeys",
    "BudgetStoreUnavailable",
    "Decision",
    "Guard",
    "GuardrailViolation",
    "HoldAlreadyUsed",
    "HoldConflict",
    "HoldError",
    "HoldExpired",
    "HoldNotFound",
    "HoldPending",
    "HoldRecord",
    "HoldRejected",
    "HoldRules",
    "InvalidIdentity",
    "InvalidMaker",
    "LoopBudget",
    "LoopBudgetExceeded",
    "MakerCheckerViolation",
    "ModelCall",
    "ModelUsage",
    "Policy",
    "ReadBackCheck",
    "RetryPolicy",
    "Reviewer",
    "ReviewerNotAllowed",
    "Reviewers",
    "RunState",
    "StoreConfig",
    "ToolCall",
    "ToolLoop",
    "ToolLoopDetected",
    "ToolOutcome",
    "UnsignedApproval",
    "Verification",
    "VerificationFailed",
    "WindowBudget",
    "WindowBudgetExceeded",
    "approve",
    "get_hold",
    "list_holds",
    "load_policy",
    "open_store",
    "reject",
    "wait_for_decision",
]

# 0.1 names that are plumbing or adapter API: name -> the module that has it.
_MOVED = {
    "Approvals": "spanguard.guardrails.approvals",
    "Attempt": "spanguard.guardrails.routing",
    "AuditCheck": "spanguard.guardrails.audit",
    "AuditLog": "spanguard.guardrails.audit",
    "AuditRecord": "spanguard.guardrails.audit",
    "BudgetStore": "spanguard.guardrails.stores",
    "CircuitBreaker": "spanguard.guardrails.circuit",
    "CircuitBreakers": "spanguard.guardrails.circuit",
    "Enforcer": "spanguard.guardrails.enforcer",
    "GatedCall": "spanguard.guardrails.gating",
    "HoldGuard": "spanguard.guardrails.holds",
    "HoldStore": "spanguard.guardrails.stores",
    "LoopBudgetGuard": "spanguard.guardrails.budget",
    "MemoryBudgetStore": "spanguard.guardrails.stores",
    "RedisBudgetStore": "spanguard.guardrails.stores",
    "RouteFailure": "spanguard.guardrails.errors",
    "Router": "spanguard.guardrails.routing",
    "RoutingOutcome": "spanguard.guardrails.routing",
    "SQLiteBudgetStore": "spanguard.guardrails.stores",
    "ToolCallNotRetried": "spanguard.guardrails.retry",
    "ToolLoopGuard": "spanguard.guardrails.toolloop",
    "VerificationResult": "spanguard.guardrails.verify",
    "VerifyGuard": "spanguard.guardrails.verify",
    "WindowBudgetGuard": "spanguard.guardrails.window",
    "aretry_tool_call": "spanguard.guardrails.retry",
    "gate_for": "spanguard.guardrails.gating",
    "gated": "spanguard.guardrails.gating",
    "hold_result_payload": "spanguard.guardrails.holds",
    "open_audit_log": "spanguard.guardrails.audit",
    "open_budget_store": "spanguard.guardrails.stores",
    "open_hold_store": "spanguard.guardrails.hold_store",
    "record_verification": "spanguard.guardrails.verify",
    "retry_tool_call": "spanguard.guardrails.retry",
    "tool_retry_allowed": "spanguard.guardrails.retry",
    "verification_of": "spanguard.guardrails.verify",
}

__getattr__ = moved_names(__name__, _MOVED)
