"""The ``Policy``: what the guards enforce, built in code or read from TOML.

A policy reads like a sentence (``Policy(loop_budget=LoopBudget(max_input_tokens=
200_000))``) and a TOML file maps one to one onto the same objects: each top-level
table has exactly one parser, owned by the module of the guard it configures.
Validation happens here, once, at build/load time; the per-call path never
re-checks configuration. A bad file is refused with the key and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanguard._toml import toml_reader
from spanguard.errors import ConfigError
from spanguard.guardrails.retry import RetryPolicy, parse_retry_table

if TYPE_CHECKING:
    from spanguard.guardrails.budget import LoopBudget
    from spanguard.guardrails.holds import HoldRules
    from spanguard.guardrails.stores import StoreConfig
    from spanguard.guardrails.toolloop import ToolLoop
    from spanguard.guardrails.verify import Verification
    from spanguard.guardrails.window import WindowBudget
from spanguard.redaction import parse_redaction_table

TableParser = Callable[[Mapping[str, Any], str], Any]


@dataclass(frozen=True)
class Policy:
    """Every part is optional; an empty policy allows everything and records nothing."""

    name: str = "default"
    version: str | None = None
    # Guards register their parts below (one field per guard module).
    holds: HoldRules | None = None
    verify: Verification | None = None
    retry: RetryPolicy | None = None
    loop_budget: LoopBudget | None = None
    window_budgets: tuple[WindowBudget, ...] = ()
    tool_loop: ToolLoop | None = None
    store: StoreConfig | None = None
    # ``[redaction] patterns``: read by the core's configure() too (it may not
    # import guardrails); kept here so a policy file with the table loads.
    redaction_patterns: Mapping[str, str] = field(default_factory=dict)
    # Tables of guards defined outside spanguard: a TABLE_PARSERS entry whose
    # field is "extras" returns {table name: config}, merged here.
    extras: Mapping[str, Any] = field(default_factory=dict)

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
        known = {f.name for f in fields(cls)} - {"extras"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("name", "version"):
                if not isinstance(value, str):
                    raise ConfigError(source, f"{key} must be a string")
                values[key] = value
            elif key in TABLE_PARSERS:
                if not isinstance(value, Mapping):
                    raise ConfigError(source, f"[{key}] must be a table")
                field_name, parser = TABLE_PARSERS[key]
                parsed = parser(value, f"{source} [{key}]")
                if field_name == "extras":
                    values["extras"] = {**values.get("extras", {}), **parsed}
                else:
                    values[field_name] = parsed
            else:
                tables = ", ".join(sorted(TABLE_PARSERS)) or "none"
                raise ConfigError(source, f"unknown key {key!r}",
                                  f"known tables: {tables}; known fields: "
                                  f"{', '.join(sorted(known))}")
        return cls(**values)

    def with_parts(self, **parts: Any) -> Policy:
        return replace(self, **parts)


# TOML table name -> (Policy field, parser). Guard modules add their entry.
TABLE_PARSERS: dict[str, tuple[str, TableParser]] = {
    "retry": ("retry", parse_retry_table),
    "redaction": ("redaction_patterns", parse_redaction_table),
}


def load_policy(policy: Policy | str | os.PathLike[str] | None) -> Policy | None:
    """Accept a Policy, a path to a TOML file, or None (then ``SPANGUARD_POLICY``)."""
    if isinstance(policy, Policy):
        return policy
    if policy is None:
        env = os.environ.get("SPANGUARD_POLICY")
        return Policy.from_file(env) if env else None
    return Policy.from_file(policy)
