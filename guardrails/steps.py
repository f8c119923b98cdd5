"""Framework-free descriptions of agent steps, as the guards see them.

An adapter (LangChain callback, MCP middleware, LlamaIndex handler) translates
its framework's event into one of these and hands it to the
:class:`~spanguard.guardrails.enforcer.Enforcer`; guards never import a
framework. Fields are plain values so that a decision can be replayed from the
trace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from spanguard.guardrails.tool_arguments import ToolSchema

DecisionKind = Literal["allow", "deny", "hold", "retry", "report"]


@dataclass(slots=True)
class RunState:
    """What the guards remember about one agent run (one root span).

    ``identity`` is the maker (the person or service the run acts for);
    ``session``/``user``/``tenant`` are keyed hashes, never raw ids. ``lock`` is
    held by the :class:`~spanguard.guardrails.enforcer.Enforcer` while guards
    admit or settle a step of the run, so parallel branches of one run (threads or
    asyncio tasks) reserve against its limits one at a time.
    """

    run_key: Hashable
    identity: str | None = None
    session: str | None = None
    user: str | None = None
    tenant: str | None = None
    trace_id: str | None = None
    input_tokens: list[int] = field(default_factory=list)
    retry_flags: list[bool] = field(default_factory=list)
    output_tokens: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    tool_calls: int = 0
    scratch: dict[str, Any] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)


TextParts = Callable[[], Sequence[str]]
"""Text produced on demand, one string per message: read only when a guard needs a
token estimate, so a call decided from the run's history never pays for it."""


@dataclass(slots=True)
class ModelCall:
    """A model call about to happen (``input_tokens`` is known only after, if at all).

    ``estimated_input_tokens`` is the caller's count of the input, when it has one;
    ``prompt`` the request's text (messages, system prompt, tool schemas) for an
    estimate (:mod:`spanguard.guardrails.estimate`); ``price`` turns (input, output)
    tokens into USD when the adapter knows the model's prices. ``reserved`` is what
    each guard reserved for the call: an adapter hands the same object to
    ``after_model_call`` or ``cancel_model_call``, which settle or release it.
    """

    model: str | None
    is_retry: bool = False
    estimated_input_tokens: int | None = None
    prompt: TextParts | None = None
    price: Callable[[int, int], float | None] | None = None
    reserved: dict[str, Any] | None = None


@dataclass(slots=True)
class ModelUsage:
    """What a model call used. ``reported`` is False when the provider reported no
    usage: the counts are then the enforcer's to fill in (``on_missing_usage``), from
    the call's prompt and ``output``, the reply's text. ``estimated`` marks counts
    that are estimates."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    reported: bool = True
    output: TextParts | None = None
    estimated: bool = False

    @classmethod
    def missing(cls, output: TextParts | None = None) -> ModelUsage:
        """The provider reported nothing; ``output`` gives the reply's text."""
        return cls(reported=False, output=output)


@dataclass(slots=True)
class ToolCall:
    """A tool call about to execute. ``annotations`` are MCP tool hints when known;
    ``server`` names the MCP server the call goes to (None outside MCP), so that a
    decision about one server's tool is never taken for another's."""

    tool: str
    arguments: Mapping[str, Any]
    call_id: str | None = None
    annotations: Mapping[str, Any] | None = None
    arguments_hash: str | None = None
    state_hash: str | None = None
    server: str | None = None
    # The tool's declared input schema (MCP ``inputSchema``, a LangChain tool's
    # ``args_schema``) when the adapter knows it; the tool-arguments guard checks it.
    schema: ToolSchema | None = None


@dataclass(slots=True)
class ToolOutcome:
    """A finished tool call. ``read_back`` lets a verifier call another tool of the
    same adapter, ``(tool, arguments) -> result`` (e.g. ``git_log`` after
    ``git_commit``); None when the adapter cannot."""

    result: Any
    is_error: bool = False
    read_back: Callable[[str, Mapping[str, Any]], Any] | None = None


@dataclass(slots=True)
class Decision:
    """A guard's answer; ``attributes`` go on the guardrail span/event as they are."""

    kind: DecisionKind
    guard: str
    reason: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None

    @property
    def allowed(self) -> bool:
        return self.kind in ("allow", "report")


@dataclass(slots=True)
class RetrievedDocument:
    """One retrieved document or chunk, as guards see it: ids and metadata, no text.

    ``id`` is the source document's id, ``chunk_id`` the chunk's (either may be
    None); ``metadata`` is the document's own (the tenant label lives there).
    """

    id: str | None
    chunk_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Retrieval:
    """A retrieval that finished, before its documents reach the model."""

    source: str | None
    documents: Sequence[RetrievedDocument]


@dataclass(slots=True)
class Answer:
    """Text a model produced that is about to reach the user (or the next step)."""

    text: str
