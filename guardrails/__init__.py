"""Policies and enforcement: budgets, loop detection, holds, verification, retries.

Framework-free: guards see :mod:`spanguard.guardrails.steps` descriptions and
answer with decisions; the adapters in ``spanguard.plugins`` and
``spanguard.mcp_bridge`` carry them out.
"""

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

__all__ = [
    "Decision",
    "Enforcer",
    "Guard",
    "GuardrailViolation",
    "ModelCall",
    "ModelUsage",
    "Policy",
    "RunState",
    "ToolCall",
    "ToolOutcome",
    "load_policy",
]
