"""Policies and enforcement: budgets, loop detection, holds, verification, retries.

Framework-free: guards see :mod:`spanguard.guardrails.steps` descriptions and
answer with decisions; the adapters in ``spanguard.plugins`` and
``spanguard.mcp_bridge`` carry them out.
"""

from spanguard.guardrails.circuit import CircuitBreaker, CircuitBreakers
from spanguard.guardrails.enforcer import Enforcer, Guard
from spanguard.guardrails.errors import AllRoutesFailed, GuardrailViolation, RouteFailure
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

__all__ = [
    "AllRoutesFailed",
    "Attempt",
    "CircuitBreaker",
    "CircuitBreakers",
    "Decision",
    "Enforcer",
    "Guard",
    "GuardrailViolation",
    "ModelCall",
    "ModelUsage",
    "Policy",
    "RetryPolicy",
    "RouteFailure",
    "Router",
    "RoutingOutcome",
    "RunState",
    "ToolCall",
    "ToolCallNotRetried",
    "ToolOutcome",
    "aretry_tool_call",
    "load_policy",
    "retry_tool_call",
    "tool_retry_allowed",
]
