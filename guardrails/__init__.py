"""Policies and enforcement: budgets, loop detection, holds, verification, retries.

Framework-free: guards see :mod:`spanguard.guardrails.steps` descriptions and
answer with decisions; the adapters in ``spanguard.plugins`` and
``spanguard.mcp_bridge`` carry them out. Importing this package registers every
guard module's policy table and guard builder.
"""

from spanguard.guardrails.approvals import (
    ApprovalError,
    Approvals,
    HoldConflict,
    HoldExpired,
    HoldNotFound,
    MakerCheckerViolation,
    approve,
    get_hold,
    list_holds,
    reject,
    wait_for_decision,
)
from spanguard.guardrails.audit import AuditCheck, AuditLog, AuditRecord, open_audit_log
from spanguard.guardrails.budget import LoopBudget, LoopBudgetExceeded, LoopBudgetGuard
from spanguard.guardrails.circuit import CircuitBreaker, CircuitBreakers
from spanguard.guardrails.enforcer import Enforcer, Guard
from spanguard.guardrails.errors import AllRoutesFailed, GuardrailViolation, RouteFailure
from spanguard.guardrails.gating import GatedCall, gate_for, gated
from spanguard.guardrails.hold_store import HoldRecord, HoldStore, open_hold_store
from spanguard.guardrails.holds import (
    HoldAlreadyUsed,
    HoldError,
    HoldGuard,
    HoldPending,
    HoldRejected,
    HoldRules,
    hold_result_payload,
)
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.retry import (
    RetryPolicy,
    ToolCallNotRetried,
    aretry_tool_call,
    retry_tool_call,
    tool_retry_allowed,
)
from spanguard.guardrails.routing import Attempt, Router, RoutingOutcome
from spanguard.guardrails.steps import (
    Decision,
    ModelCall,
    ModelUsage,
    RunState,
    ToolCall,
    ToolOutcome,
)
from spanguard.guardrails.stores import (
    BudgetStore,
    MemoryBudgetStore,
    RedisBudgetStore,
    SQLiteBudgetStore,
    StoreConfig,
    open_budget_store,
)
from spanguard.guardrails.toolloop import ToolLoop, ToolLoopDetected, ToolLoopGuard
from spanguard.guardrails.verify import (
    ReadBackCheck,
    Verification,
    VerificationFailed,
    VerificationResult,
    VerifyGuard,
    record_verification,
    verification_of,
)
from spanguard.guardrails.window import (
    BudgetStoreUnavailable,
    WindowBudget,
    WindowBudgetExceeded,
    WindowBudgetGuard,
)

__all__ = [
    "AllRoutesFailed",
    "ApprovalError",
    "Approvals",
    "Attempt",
    "AuditCheck",
    "AuditLog",
    "AuditRecord",
    "BudgetStore",
    "BudgetStoreUnavailable",
    "CircuitBreaker",
    "CircuitBreakers",
    "Decision",
    "Enforcer",
    "GatedCall",
    "Guard",
    "GuardrailViolation",
    "HoldAlreadyUsed",
    "HoldConflict",
    "HoldError",
    "HoldExpired",
    "HoldGuard",
    "HoldNotFound",
    "HoldPending",
    "HoldRecord",
    "HoldRejected",
    "HoldRules",
    "HoldStore",
    "LoopBudget",
    "LoopBudgetExceeded",
    "LoopBudgetGuard",
    "MakerCheckerViolation",
    "MemoryBudgetStore",
    "ModelCall",
    "ModelUsage",
    "Policy",
    "ReadBackCheck",
    "RedisBudgetStore",
    "RetryPolicy",
    "RouteFailure",
    "Router",
    "RoutingOutcome",
    "RunState",
    "SQLiteBudgetStore",
    "StoreConfig",
    "ToolCall",
    "ToolCallNotRetried",
    "ToolLoop",
    "ToolLoopDetected",
    "ToolLoopGuard",
    "ToolOutcome",
    "Verification",
    "VerificationFailed",
    "VerificationResult",
    "VerifyGuard",
    "WindowBudget",
    "WindowBudgetExceeded",
    "WindowBudgetGuard",
    "approve",
    "aretry_tool_call",
    "gate_for",
    "gated",
    "get_hold",
    "hold_result_payload",
    "list_holds",
    "load_policy",
    "open_audit_log",
    "open_budget_store",
    "open_hold_store",
    "record_verification",
    "reject",
    "retry_tool_call",
    "tool_retry_allowed",
    "verification_of",
    "wait_for_decision",
]
