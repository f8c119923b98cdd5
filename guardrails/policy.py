"""The ``Policy``: what the guards enforce, built in code or read from TOML.

A policy reads like a sentence (``Policy(loop_budget=LoopBudget(max_input_tokens=
200_000))``) and a TOML file maps one to one onto the same objects: each top-level
table has exactly one parser (:data:`TABLES`, a fixed table), owned by the module
of the part it configures. Validation happens when a part is built (in code or
from the file), once; the per-call path never re-checks configuration. A bad file
is refused with the table, the key and the reason.

Guards of your own join a policy in code, ``Policy(guards=(MyGuard(),))``: they
run after spanguard's own (see :func:`~spanguard.guardrails.pipeline.build_guards`).
A TOML file cannot name code, so it cannot add them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from spanguard._toml import toml_reader
from spanguard.errors import ConfigError
from spanguard.guardrails.audit_keys import AuditKeys, parse_audit_table
from spanguard.guardrails.budget import LoopBudget, parse_loop_budget
from spanguard.guardrails.citations import Citations, parse_citations
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.holds import HoldRules, parse_holds_table
from spanguard.guardrails.retry import RetryPolicy, parse_retry_table
from spanguard.guardrails.review import ReviewRules, parse_review
from spanguard.guardrails.stores.urls import StoreConfig, parse_store
from spanguard.guardrails.structured import StructuredOutput, parse_structured_output
from spanguard.guardrails.tenant_scope import TenantScope, parse_tenant_scope
from spanguard.guardrails.tool_arguments import ToolArguments, parse_tool_arguments
from spanguard.guardrails.toolloop import ToolLoop, parse_tool_loop
from spanguard.guardrails.usage import UsageAccounting, parse_usage_table
from spanguard.guardrails.verify import Verification, parse_verify_table
from spanguard.guardrails.window import WindowBudget, parse_window_budgets
from spanguard.redaction import parse_redaction_table

TableParser = Callable[[Mapping[str, Any], str], Any]

# TOML table name -> (Policy field, parser). Fixed: nothing adds to it at run time.
TABLES: Mapping[str, tuple[str, TableParser]] = {
    "loop_budget": ("loop_budget", parse_loop_budget),
    "window_budgets": ("window_budgets", parse_window_budgets),
    "tool_loop": ("tool_loop", parse_tool_loop),
    "tool_arguments": ("tool_arguments", parse_tool_arguments),
    "holds": ("holds", parse_holds_table),
    "review": ("review", parse_review),
    "verify": ("verify", parse_verify_table),
    "tenant_scope": ("tenant_scope", parse_tenant_scope),
    "citations": ("citations", parse_citations),
    "structured_output": ("structured_output", parse_structured_output),
    "retry": ("retry", parse_retry_table),
    "store": ("store", parse_store),
    "audit": ("audit", parse_audit_table),
    "usage": ("usage", parse_usage_table),
    # Read by the core's configure() too (it may not import guardrails); kept
    # here so a policy file with the table loads.
    "redaction": ("redaction_patterns", parse_redaction_table),
}


@dataclass(frozen=True)
class Policy:
    """Every part is optional; an empty policy allows everything and records nothing."""

    name: str = "default"
    version: str | None = None
    holds: HoldRules | None = None
    verify: Verification | None = None
    retry: RetryPolicy | None = None
    loop_budget: LoopBudget | None = None
    window_budgets: tuple[WindowBudget, ...] = ()
    tool_loop: ToolLoop | None = None
    tool_arguments: ToolArguments | None = None
    review: ReviewRules | None = None
    tenant_scope: TenantScope | None = None
    citations: Citations | None = None
    structured_output: StructuredOutput | None = None
    store: StoreConfig | None = None
    audit: AuditKeys | None = None
    usage: UsageAccounting = field(default_factory=UsageAccounting)
    redaction_patterns: Mapping[str, str] = field(default_factory=dict)
    guards: tuple[Guard, ...] = ()

    def __post_init__(self) -> None:
        guards = self.guards
        if not isinstance(guards, (list, tuple)) or not all(isinstance(g, Guard) for g in guards):
            raise ConfigError("Policy", f"guards must be a sequence of Guard objects, "
                                        f"got {guards!r}", "subclass spanguard.guardrails.Guard")
        object.__setattr__(self, "guards", tuple(guards))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Policy:
        source = os.fspath(path)
        try:
            text = Path(source).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(source, f"cannot read policy file: {exc.strerror or exc}",
                              "check the path given to --policy or SPANGUARD_POLICY") from exc
        try:
            data = toml_reader.loads(text)
        except toml_reader.TOMLDecodeError as exc:
            raise ConfigError(source, f"not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "policy") -> Policy:
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("name", "version"):
                if not isinstance(value, str):
                    raise ConfigError(source, f"{key} must be a string")
                values[key] = value
            elif key in TABLES:
                if not isinstance(value, Mapping):
                    raise ConfigError(source, f"[{key}] must be a table")
                field_name, parser = TABLES[key]
                values[field_name] = parser(value, f"{source} [{key}]")
            else:
                known = {f.name for f in fields(cls)} - {"guards"}
                raise ConfigError(source, f"unknown key {key!r}",
                                  f"known tables: {', '.join(sorted(TABLES))}; known "
                                  f"fields: {', '.join(sorted(known))}")
        return cls(**values)

    def with_parts(self, **parts: Any) -> Policy:
        return replace(self, **parts)


def load_policy(policy: Policy | str | os.PathLike[str] | None) -> Policy | None:
    """Accept a Policy, a path to a TOML file, or None (then ``SPANGUARD_POLICY``)."""
    if isinstance(policy, Policy):
        return policy
    if policy is None:
        env = os.environ.get("SPANGUARD_POLICY")
        return Policy.from_file(env) if env else None
    return Policy.from_file(policy)
