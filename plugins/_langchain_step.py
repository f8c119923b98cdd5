"""Per-run adapter state of the LangChain handler, kept on ``RunEntry.data``.

One small object per run that needs it (model and tool runs, and a root when a
policy is active, the run carries ids or content is captured), shared by the tracing side
(:mod:`spanguard.plugins.langchain`) and the enforcement side
(:mod:`spanguard.plugins._langchain_guard`): one allocation per step, not two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contextvars import Token

    from spanguard.guardrails.gating import GatedCall
    from spanguard.guardrails.steps import ModelCall, RunState, ToolCall
    from spanguard.plugins._langchain_content import CallContent
    from spanguard.plugins._langchain_extract import Usage
    from spanguard.runcontext import RunContext
    from spanguard.transcript import Transcript


class Step:
    """Tracing fields first, then the ones only enforcement reads or writes."""

    __slots__ = ("call", "content", "first_token", "gate", "ids", "ids_token", "last_chunk",
                 "model", "resumed", "router", "run", "started", "thread", "token",
                 "transcript", "usage")

    def __init__(self) -> None:
        self.first_token = False
        self.model: str | None = None
        self.router = False  # a ResilientChatModel's own run: its attempts carry the usage
        self.started = 0.0
        self.token: object | None = None  # OTel context token of an active tool span
        self.usage: Usage | None = None  # summed from streamed chunks
        self.ids: RunContext | None = None  # roots only: who the run is for (raw)
        self.ids_token: Token[RunContext | None] | None = None  # while a tool body runs
        self.gate: GatedCall | None = None  # a hold gate around this tool call verifies it
        # The same handler attached twice sees each streamed chunk twice: count it once.
        self.last_chunk: object | None = None
        # Roots on a LangGraph thread: its id (raw, never exported) and whether the run
        # continues the thread's paused run (spanguard.resume).
        self.thread: str | None = None
        self.resumed = False
        # Content capture only: a chat span's captured input, and (roots) the run's transcript.
        self.content: CallContent | None = None
        self.transcript: Transcript | None = None
        # Enforcement only: the step as the guards see it, and (roots) the run's state.
        self.call: ModelCall | ToolCall | None = None
        self.run: RunState | None = None
