"""The interface every guard implements, spanguard's own and users' alike.

A guard is a small object with one hook per kind of step; each hook answers
with a :class:`~spanguard.guardrails.steps.Decision`, or None for "no opinion".
Guards hold the policy logic and no framework imports; the
:class:`~spanguard.guardrails.enforcer.Enforcer` runs them in the order
:func:`~spanguard.guardrails.pipeline.build_guards` gives. A guard of your own
joins a policy through ``Policy(guards=(MyGuard(),))``.
"""

from __future__ import annotations

from spanguard.guardrails.steps import (
    Decision,
    ModelCall,
    ModelUsage,
    RunState,
    ToolCall,
    ToolOutcome,
)


class Guard:
    """Base of every guard: each hook defaults to "no opinion"."""

    name = "guard"

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        return None

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        return None

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        return None

    def after_tool_call(self, run: RunState, call: ToolCall,
                        outcome: ToolOutcome) -> Decision | None:
        return None

    def end_run(self, run: RunState) -> None:
        return None
