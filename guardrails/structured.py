"""Structured output that does not parse or does not validate: refuse it, or repair it.

Seed 004's ``syntax_decode_error`` (the model's output is not the JSON or tool
call asked for) and ``schema_validation_error`` (it parses, but fields are
missing or wrong). An adapter asks the model for structured output (LangChain
``with_structured_output``, LlamaIndex ``structured_predict``), classifies what
came back with :func:`classify_failure`, and hands the result to the guard as a
:class:`StructuredResult`. The guard answers, per the policy's
``[structured_output]``:

* ``on_failure = "refuse"``: the failure is raised as
  :class:`StructuredOutputError` (a ``deny``); nothing is invented in place of
  the missing fields;
* ``on_failure = "repair"``: up to ``max_repairs`` more attempts, each told what
  failed (:class:`RepairRequested`, a ``retry`` decision); after the last one,
  the failure is raised as above.

Every failed attempt is a guardrail span with its ``error.type``, the attempt
number and a summary of field paths and rules (never values); the model call of
each attempt is a span of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spanguard import semconv as sc
from spanguard.guardrails import _parse
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.steps import Decision, RunState

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy
    from spanguard.guardrails.stores import Store

GUARD_NAME = "structured_output"
SYNTAX_DECODE_ERROR = "syntax_decode_error"
SCHEMA_VALIDATION_ERROR = "schema_validation_error"
OnFailure = Literal["refuse", "repair"]
_SYNTAX_KINDS = frozenset({"json_invalid", "json_type"})


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """``on_failure``: refuse, or repair with up to ``max_repairs`` more attempts;
    ``max_errors``: how many validation errors a summary lists."""

    on_failure: OnFailure = "refuse"
    max_repairs: int = 2
    max_errors: int = 5

    def __post_init__(self) -> None:
        source = "StructuredOutput"
        _parse.choice(self.on_failure, "on_failure", source, ("refuse", "repair"))
        _parse.integer(self.max_repairs, "max_repairs", source, minimum=0)
        _parse.integer(self.max_errors, "max_errors", source, minimum=1)

    @property
    def max_attempts(self) -> int:
        return 1 + self.max_repairs if self.on_failure == "repair" else 1


def parse_structured_output(table: Mapping[str, Any], source: str) -> StructuredOutput:
    """``[structured_output]``: on_failure (refuse | repair), max_repairs, max_errors."""
    _parse.check_keys(table, ("on_failure", "max_repairs", "max_errors"), source)
    return _parse.in_table(source, StructuredOutput, **table)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one attempt's output is unusable: its error type and a value-free summary."""

    error_type: str
    count: int
    summary: tuple[str, ...]


@dataclass(slots=True)
class StructuredResult:
    """One attempt at structured output, as the guard sees it (``failure`` None: usable)."""

    attempt: int
    failure: Failure | None
    schema_hash: str | None = None


class StructuredOutputError(GuardrailViolation):
    """The output could not be used, and no (more) repair is allowed."""

    guard = GUARD_NAME

    def __init__(self, failure: Failure, attempts: int) -> None:
        self.failure = failure
        self.error_type = failure.error_type
        self.attempts = attempts
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"structured output unusable after {attempts} {plural} ({failure.error_type}): "
            f"{'; '.join(failure.summary)}. Nothing was filled in for it; the caller "
            "gets this error instead of a partial object")


class RepairRequested(StructuredOutputError):
    """The attempt failed and the policy allows another: the adapter asks again."""

    def __init__(self, failure: Failure, attempts: int, max_attempts: int) -> None:
        super().__init__(failure, attempts)
        self.max_attempts = max_attempts
        self.args = (f"attempt {attempts} of {max_attempts} failed ({failure.error_type}): "
                     f"{'; '.join(failure.summary)}",)

    def feedback(self) -> str:
        """What the model is told before its next attempt (rules and paths, no values)."""
        what = ("was not valid structured output" if self.error_type == SYNTAX_DECODE_ERROR
                else "did not match the required schema")
        return (f"Your previous answer {what}: {'; '.join(self.failure.summary)}. "
                "Answer again with output that follows the schema exactly; do not leave "
                "required fields out.")


class StructuredOutputGuard(Guard):
    name = GUARD_NAME

    def __init__(self, config: StructuredOutput) -> None:
        self.config = config

    def check_structured_output(self, run: RunState,
                                result: StructuredResult) -> Decision | None:
        failure = result.failure
        if failure is None:
            return None
        attributes: dict[str, Any] = {sc.REPAIR_ATTEMPT: result.attempt,
                                      sc.REPAIR_MAX_ATTEMPTS: self.config.max_attempts,
                                      sc.VALIDATION_ERROR_COUNT: failure.count,
                                      sc.VALIDATION_SUMMARY: "; ".join(failure.summary)}
        if result.schema_hash is not None:
            attributes[sc.OUTPUT_SCHEMA_HASH] = result.schema_hash
        if result.attempt < self.config.max_attempts:
            repair = RepairRequested(failure, result.attempt, self.config.max_attempts)
            return Decision("retry", GUARD_NAME, str(repair), attributes, repair)
        error = StructuredOutputError(failure, result.attempt)
        return Decision("deny", GUARD_NAME, str(error), attributes, error)


def classify_failure(error: BaseException | None, *, limit: int = 5) -> Failure:
    """The failure an output parser raised, typed by seed 004's taxonomy.

    ``error`` None means nothing structured came back at all (no tool call, an
    empty answer): a syntax failure. The cause chain is searched, so a
    framework's wrapper exception (LangChain's ``OutputParserException``) is
    typed by what it wraps: a JSON decode error is syntax; a pydantic
    ``ValidationError`` is syntax when the text was not JSON, else schema; a
    ``jsonschema`` error is schema.
    """
    if error is None:
        return Failure(SYNTAX_DECODE_ERROR, 1, ("$: no structured output in the response",))
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, json.JSONDecodeError):
            return Failure(SYNTAX_DECODE_ERROR, 1, (
                f"$: {current.msg} at line {current.lineno} column {current.colno}",))
        errors = getattr(current, "errors", None)
        if callable(errors) and hasattr(current, "title"):  # pydantic's ValidationError
            return _pydantic_failure(errors(include_input=False, include_url=False), limit)
        if hasattr(current, "json_path") and hasattr(current, "validator"):  # jsonschema
            from spanguard.guardrails.tool_arguments import describe

            return Failure(SCHEMA_VALIDATION_ERROR, 1, (describe(current),))
        current = current.__cause__ or current.__context__
    return Failure(SYNTAX_DECODE_ERROR, 1, (f"$: {type(error).__name__}",))


def _pydantic_failure(errors: Sequence[Mapping[str, Any]], limit: int) -> Failure:
    kinds = [str(e.get("type", "invalid")) for e in errors]
    syntax = bool(kinds) and all(kind in _SYNTAX_KINDS for kind in kinds)
    summary = tuple(f"{_loc(e.get('loc', ()))}: {kind}"
                    for e, kind in zip(errors[:limit], kinds[:limit], strict=True))
    return Failure(SYNTAX_DECODE_ERROR if syntax else SCHEMA_VALIDATION_ERROR,
                   len(errors) or 1, summary or ("$: invalid",))


def _loc(loc: Sequence[Any]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def build_structured_output_guards(policy: Policy,
                                   store: Store | None = None) -> Sequence[Guard]:
    config = policy.structured_output
    return [] if config is None else [StructuredOutputGuard(config)]
