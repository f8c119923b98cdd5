"""Policies and enforcement: budgets, loop detection, holds, verification, retries.

Framework-free: guards see :mod:`spanguard.guardrails.steps` descriptions and
answer with decisions; the adapters in ``spanguard.plugins`` and
``spanguard.mcp_bridge`` carry them out.
"""

from spanguard.guardrails.budget import LoopBudget, LoopBudgetExceeded, LoopBudgetGuard
from spanguard.guardrails.enforcer import Enforcer, Guard
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.policy import Policy, load_policy
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
from spanguard.guardrails.window import (
    BudgetStoreUnavailable,
    WindowBudget,
    WindowBudgetExceeded,
    WindowBudgetGuard,
)

__all__ = [
    "BudgetStore",
    "BudgetStoreUnavailable",
    "Decision",
    "Enforcer",
    "Guard",
    "GuardrailViolation",
    "LoopBudget",
    "LoopBudgetExceeded",
    "LoopBudgetGuard",
    "MemoryBudgetStore",
    "ModelCall",
    "ModelUsage",
    "Policy",
    "RedisBudgetStore",
    "RunState",
    "SQLiteBudgetStore",
    "StoreConfig",
    "ToolCall",
    "ToolLoop",
    "ToolLoopDetected",
    "ToolLoopGuard",
    "ToolOutcome",
    "WindowBudget",
    "WindowBudgetExceeded",
    "WindowBudgetGuard",
    "load_policy",
    "open_budget_store",
]
