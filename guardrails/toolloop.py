"""Stop an agent that repeats itself: same tool call again and again, or no progress.

Two signals (seed 004's ``tool_loop_detected`` and ``no_progress_error``):
the same tool with the same canonical argument hash N times in one run, and an
unchanged ``ToolCall.state_hash`` (the adapter's hash of the agent's state) over
N consecutive tool steps. Either one refuses the call before it executes. The
guard needs nothing but the framework-free :class:`ToolCall`, so the LangGraph
plugin and the MCP bridge (``tools/call``) share it as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spanguard import semconv as sc
from spanguard.errors import ConfigError
from spanguard.guardrails import _parse
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.steps import Decision, RunState, ToolCall
from spanguard.hashing import payload_hash

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy
    from spanguard.guardrails.stores import Store

GUARD_NAME = "tool_loop"
_STATE_KEY = "spanguard.tool_loop"
KIND_REPEATED = "repeated_call"
KIND_NO_PROGRESS = "no_progress"


@dataclass(frozen=True, slots=True)
class ToolLoop:
    """``identical_calls``: the call that would be the N-th identical (tool, arguments)
    call of a run is refused. ``stalled_steps``: the N-th consecutive tool step that
    sees the same state hash is refused. None turns a signal off.
    """

    identical_calls: int | None = 3
    stalled_steps: int | None = None

    def __post_init__(self) -> None:
        for key in ("identical_calls", "stalled_steps"):
            value = getattr(self, key)
            if value is not None and _parse.positive(value, key, "ToolLoop", integer=True) < 2:
                raise ConfigError("ToolLoop", f"{key} must be at least 2, got {value!r}",
                                  "a loop needs a repeat")


def parse_tool_loop(table: Mapping[str, Any], source: str) -> ToolLoop:
    _parse.check_keys(table, ("identical_calls", "stalled_steps"), source)
    return _parse.in_table(source, ToolLoop, **table)


class ToolLoopDetected(GuardrailViolation):
    """The run repeats a tool call, or makes no progress; ``kind`` says which.

    ``error_type`` is ``tool_loop_detected`` for repeats and ``no_progress_error``
    for an unchanged state (seed 004's taxonomy).
    """

    guard = GUARD_NAME
    error_type = "tool_loop_detected"

    def __init__(self, kind: str, tool: str, count: int, limit: int,
                 arguments_hash: str | None = None, state_hash: str | None = None) -> None:
        self.kind = kind
        self.tool = tool
        self.count = count
        self.limit = limit
        self.arguments_hash = arguments_hash
        self.state_hash = state_hash
        if kind == KIND_REPEATED:
            what = (f"tool {tool!r} called with the same arguments ({arguments_hash}) "
                    f"{count} times in this run (limit {limit - 1} identical calls)")
        else:
            self.error_type = "no_progress_error"
            what = (f"state hash {state_hash} unchanged over {count} tool steps "
                    f"(limit {limit - 1}), last tool {tool!r}")
        super().__init__(f"tool loop detected: {what}. The call was not executed and the "
                         "run's earlier results are kept; change the arguments, replan, "
                         "or raise [tool_loop] limits")


# Distinct (tool, arguments) pairs one run remembers: a long MCP session makes calls
# without end, and its memory must not grow with them. Least recently called pairs go
# first, so a call that keeps repeating stays counted.
MAX_DISTINCT_CALLS = 4096


class _LoopState:
    __slots__ = ("counts", "last_state", "same_state")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.last_state: str | None = None
        self.same_state = 0


class ToolLoopGuard(Guard):
    name = GUARD_NAME

    def __init__(self, config: ToolLoop) -> None:
        self.config = config

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        state: _LoopState | None = run.scratch.get(_STATE_KEY)
        if state is None:
            state = run.scratch[_STATE_KEY] = _LoopState()
        config = self.config
        if config.identical_calls is not None:
            if call.arguments_hash is None:
                call.arguments_hash = payload_hash(call.arguments)
            key = (call.tool, call.arguments_hash)
            counts = state.counts
            count = counts[key] = counts.pop(key, 0) + 1
            if len(counts) > MAX_DISTINCT_CALLS:
                del counts[next(iter(counts))]
            if count >= config.identical_calls:
                return self._deny(ToolLoopDetected(KIND_REPEATED, call.tool, count,
                                                   config.identical_calls,
                                                   arguments_hash=call.arguments_hash))
        if config.stalled_steps is not None and call.state_hash is not None:
            if call.state_hash == state.last_state:
                state.same_state += 1
            else:
                state.last_state, state.same_state = call.state_hash, 1
            if state.same_state >= config.stalled_steps:
                return self._deny(ToolLoopDetected(KIND_NO_PROGRESS, call.tool,
                                                   state.same_state, config.stalled_steps,
                                                   state_hash=call.state_hash))
        return None

    @staticmethod
    def _deny(error: ToolLoopDetected) -> Decision:
        attributes: dict[str, Any] = {sc.TOOL_LOOP_KIND: error.kind,
                                      sc.TOOL_LOOP_COUNT: error.count,
                                      sc.GUARDRAIL_LIMIT: error.limit,
                                      sc.GEN_AI_TOOL_NAME: error.tool}
        if error.arguments_hash is not None:
            attributes[sc.TOOL_ARGS_HASH] = error.arguments_hash
        return Decision("deny", GUARD_NAME, str(error), attributes, error)


def build_tool_loop_guards(policy: Policy, store: Store | None = None) -> Sequence[Guard]:
    """The policy's tool loop guard (it keeps its counts on the run: no store)."""
    return [] if policy.tool_loop is None else [ToolLoopGuard(policy.tool_loop)]
