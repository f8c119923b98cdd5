"""Which LangGraph runs continue a paused one, and what the person answered.

A run continues its thread's paused run when it is started with
``Command(resume=...)`` (the documented way to answer an ``interrupt()``) or with
``None`` as input (LangGraph's "continue from the checkpoint", used after a
static breakpoint or to re-run a stopped step). The handler then starts its root
under the paused root (:mod:`spanguard.resume`) and records here what the answer
was, without its content: the decision types of a human-in-the-loop response
(LangChain's ``approve``, ``edit``, ``reject``, ``respond``; LangGraph's agent
inbox ``accept``, ``ignore``, ``response``: an enumeration, not text; any other
``type`` could be text someone typed), else a keyed hash of the value: enough to
tell two answers apart, and, being keyed, no dictionary attack recovers a short
answer someone typed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from spanguard import semconv as sc
from spanguard.hashing import canonical_json

try:
    from langgraph.types import Command

    _COMMAND: tuple[type, ...] = (Command,)
except ImportError:  # plain LangChain: nothing resumes
    _COMMAND = ()

_MAX_DECISIONS = 64
DECISION_TYPES = frozenset({"approve", "edit", "reject", "respond",  # LangChain HITL
                            "accept", "ignore", "response"})          # agent inbox


def continues(inputs: Any) -> bool:
    """True for the input of a run that continues its thread from a checkpoint."""
    return inputs is None or _resume_value(inputs) is not None


def answer_attributes(inputs: Any, hash_value: Callable[[str], str]) -> dict[str, Any]:
    """What a resumed run's root records about the answer it carries (never its text)."""
    value = _resume_value(inputs)
    if value is None:
        return {}
    decisions = _decision_types(value)
    if decisions:
        return {sc.RESUME_DECISIONS: decisions}
    try:
        return {sc.RESUME_VALUE_HASH: hash_value(canonical_json(value))}
    except (TypeError, ValueError):  # not JSON-able: nothing safe to record
        return {}


def _resume_value(inputs: Any) -> Any:
    """``Command(resume=value)``'s value, else None."""
    return getattr(inputs, "resume", None) if isinstance(inputs, _COMMAND) else None


def _decision_types(value: Any) -> tuple[str, ...]:
    """The ``type`` of each decision in a human-in-the-loop answer, in order.

    Accepts a ``HITLResponse`` (``{"decisions": [...]}``), one decision
    (``{"type": "approve"}``), and either of those keyed by interrupt id.
    """
    if not isinstance(value, Mapping):
        return ()
    found = _one(value)
    if found:
        return found
    types: list[str] = []
    for answer in list(value.values())[:_MAX_DECISIONS]:
        if not isinstance(answer, Mapping):
            return ()
        one = _one(answer)
        if not one:
            return ()
        types.extend(one)
    return tuple(types[:_MAX_DECISIONS])


def _one(value: Mapping[Any, Any]) -> tuple[str, ...]:
    decision = value.get("type")
    if decision in DECISION_TYPES:
        return (str(decision),)
    decisions = value.get("decisions")
    if isinstance(decisions, list) and decisions:
        types = [d.get("type") for d in decisions[:_MAX_DECISIONS] if isinstance(d, Mapping)]
        if len(types) == len(decisions[:_MAX_DECISIONS]) and all(
                t in DECISION_TYPES for t in types):
            return tuple(str(t) for t in types)
    return ()
