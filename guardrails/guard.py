"""The interface every guard implements, spanguard's own and users' alike.

A guard is a small object with one hook per kind of step; each hook answers
with a :class:`~spanguard.guardrails.steps.Decision`, or None for "no opinion".
Guards hold the policy logic and no framework imports; the
:class:`~spanguard.guardrails.enforcer.Enforcer` runs them in the order
:func:`~spanguard.guardrails.pipeline.build_guards` gives. A guard of your own
joins a policy through ``Policy(guards=(MyGuard(),))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spanguard.guardrails.steps import (
    Answer,
    Decision,
    ModelCall,
    ModelUsage,
    Retrieval,
    RunState,
    ToolCall,
    ToolOutcome,
)

if TYPE_CHECKING:
    from spanguard.guardrails.structured import StructuredResult


class Guard:
    """Base of every guard: each hook defaults to "no opinion".

    A model call is reserve -> call -> settle: ``before_model_call`` may reserve
    what it predicts (keeping it in ``call.reserved[self.name]``);
    ``after_model_call`` settles it with the real usage; ``cancel_model_call``
    gives it back when the call did not happen (a later guard refused it) or ended
    without usage (an error, a cancellation). The enforcer calls the hooks of one
    run one at a time. ``uses_usage``: the guard charges tokens or cost, so usage a
    provider did not report matters to it (the policy's ``on_missing_usage``).
    """

    name = "guard"
    uses_usage = False

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        return None

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        return None

    def cancel_model_call(self, run: RunState, call: ModelCall) -> None:
        return None

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        return None

    def after_tool_call(self, run: RunState, call: ToolCall,
                        outcome: ToolOutcome) -> Decision | None:
        return None

    def after_retrieval(self, run: RunState, retrieval: Retrieval) -> Decision | None:
        return None

    def check_answer(self, run: RunState, answer: Answer) -> Decision | None:
        return None

    def check_structured_output(self, run: RunState,
                                result: StructuredResult) -> Decision | None:
        return None

    def end_run(self, run: RunState) -> None:
        return None


def overrides(guard: Guard, hook: str) -> bool:
    """Whether ``guard`` implements ``hook`` (adapters skip building steps nobody reads)."""
    return getattr(type(guard), hook) is not getattr(Guard, hook)
