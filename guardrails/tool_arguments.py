"""Refuse a tool call whose arguments do not match the tool's declared schema.

Seed 004's ``tool_argument_error``: the payload fails the tool's schema, so the
call is blocked *before the tool runs* and the model is told which fields are
wrong. The schema is the one the tool declares (an MCP tool's ``inputSchema``
from ``tools/list``; a LangChain tool's ``args_schema`` as JSON Schema); the
adapter puts it on the :class:`~spanguard.guardrails.steps.ToolCall` as a
:class:`ToolSchema`, built once per listing, which compiles its validator once
(``jsonschema``, the dialect the schema names, draft 2020-12 by default).

The span gets the schema's hash (sha256 of its canonical JSON), its version when
the tool declares one, the number of errors and a summary that names fields and
the rule they broke, never the values (arguments may be personal data). A call
whose tool has no known schema is not checked; a declared schema that is not
valid JSON Schema refuses every call to the tool (fail closed: nothing can be
proven about its arguments).
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spanguard import semconv as sc
from spanguard.guardrails import _parse
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.steps import Decision, RunState, ToolCall
from spanguard.hashing import payload_hash

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy
    from spanguard.guardrails.stores import Store

GUARD_NAME = "tool_arguments"
ERROR_TYPE = "tool_argument_error"
_VALUE_PREVIEW = 60


@dataclass(frozen=True, slots=True)
class ToolArguments:
    """``tools``: names or globs whose calls are checked (default: every tool).
    ``max_errors``: how many validation errors the summary lists."""

    tools: tuple[str, ...] = ("*",)
    max_errors: int = 5

    def __post_init__(self) -> None:
        source = "ToolArguments"
        object.__setattr__(self, "tools", _parse.strings(self.tools, "tools", source))
        _parse.integer(self.max_errors, "max_errors", source, minimum=1)

    def checks(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.tools)


def parse_tool_arguments(table: Mapping[str, Any], source: str) -> ToolArguments:
    """``[tool_arguments]``: tools (names or globs), max_errors."""
    _parse.check_keys(table, ("tools", "max_errors"), source)
    return _parse.in_table(source, ToolArguments, **table)


class ToolSchema:
    """A tool's declared input schema: its hash, its version, its compiled validator.

    Build one per tool listing (not per call): the hash is computed here and the
    validator is compiled at the first check, once, under a lock.
    """

    __slots__ = ("_lock", "_problem", "_validator", "digest", "schema", "version")

    def __init__(self, schema: Mapping[str, Any], version: str | None = None) -> None:
        self.schema = schema
        self.version = version
        self.digest = payload_hash(schema)
        self._validator: Any = None
        self._problem: str | None = None
        self._lock = threading.Lock()

    def errors(self, arguments: Mapping[str, Any], limit: int) -> tuple[int, list[str]]:
        """(how many errors, the first ``limit`` described without values)."""
        validator = self._validator or self._compile()
        if validator is None:
            return 1, [f"$: the declared schema is not valid JSON Schema ({self._problem})"]
        found = 0
        described: list[str] = []
        for error in validator.iter_errors(dict(arguments)):
            found += 1
            if len(described) < limit:
                described.append(describe(error))
        return found, described

    def _compile(self) -> Any:
        with self._lock:
            if self._validator is None and self._problem is None:
                # Imported on first use (jsonschema ships no type stubs).
                from jsonschema import exceptions, validators  # type: ignore[import-untyped]

                cls = validators.validator_for(self.schema)
                try:
                    cls.check_schema(self.schema)
                except exceptions.SchemaError as exc:
                    self._problem = f"{exc.validator} at {_path(exc.schema_path)}"
                    return None
                self._validator = cls(self.schema)
            return self._validator


def describe(error: Any) -> str:
    """One validation error as ``path: rule``, from the schema's side only.

    jsonschema's own message quotes the offending value; this never does (a
    property name the caller sent unasked is named, shortened, since a name is
    not a value).
    """
    where = error.json_path
    rule = error.validator
    expected = error.validator_value
    if rule == "required" and isinstance(error.instance, Mapping):
        missing = [name for name in expected if name not in error.instance]
        return f"{where}: missing required {_short(missing)}"
    if rule == "additionalProperties" and isinstance(error.instance, Mapping):
        declared = error.schema.get("properties") or {}
        extra = sorted(str(name) for name in error.instance if name not in declared)
        return f"{where}: unexpected {_short(extra)}"
    if rule in ("type", "enum", "const", "format", "minimum", "maximum", "exclusiveMinimum",
                "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
                "pattern", "multipleOf"):
        return f"{where}: {rule} {_short(expected)}"
    return f"{where}: {rule}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_PREVIEW else text[:_VALUE_PREVIEW] + "…"


def _path(parts: Sequence[Any]) -> str:
    return "/".join(str(p) for p in parts) or "(root)"


class ToolArgumentError(GuardrailViolation):
    """The call's arguments do not match its tool's schema; the tool did not run."""

    guard = GUARD_NAME
    error_type = ERROR_TYPE

    def __init__(self, tool: str, schema: ToolSchema, count: int, summary: list[str]) -> None:
        self.tool = tool
        self.schema_hash = schema.digest
        self.schema_version = schema.version
        self.count = count
        self.summary = summary
        more = f" (and {count - len(summary)} more)" if count > len(summary) else ""
        super().__init__(
            f"arguments of tool {tool!r} do not match its declared schema: "
            f"{'; '.join(summary)}{more}. The tool was not run; call it again with "
            f"arguments that follow its input schema")


class ToolArgumentsGuard(Guard):
    name = GUARD_NAME

    def __init__(self, config: ToolArguments) -> None:
        self.config = config

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        schema = call.schema
        if schema is None or not self.config.checks(call.tool):
            return None
        count, summary = schema.errors(call.arguments, self.config.max_errors)
        if not count:
            return None
        error = ToolArgumentError(call.tool, schema, count, summary)
        attributes: dict[str, Any] = {sc.GEN_AI_TOOL_NAME: call.tool,
                                      sc.TOOL_SCHEMA_HASH: schema.digest,
                                      sc.VALIDATION_ERROR_COUNT: count,
                                      sc.VALIDATION_SUMMARY: "; ".join(summary)}
        if schema.version is not None:
            attributes[sc.TOOL_SCHEMA_VERSION] = schema.version
        if call.arguments_hash is not None:
            attributes[sc.TOOL_ARGS_HASH] = call.arguments_hash
        return Decision("deny", GUARD_NAME, str(error), attributes, error)


def build_tool_argument_guards(policy: Policy, store: Store | None = None) -> Sequence[Guard]:
    """The policy's schema check (pure: no store)."""
    config = policy.tool_arguments
    return [] if config is None else [ToolArgumentsGuard(config)]
