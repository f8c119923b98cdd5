"""``spanguard mcp wrap`` with one active guard, so the benchmark measures the hook.

No guard module ships in this branch yet, so this registers a small realistic
one through the documented extension points: a hold-style rule that refuses
tools by name or by ``destructiveHint`` and otherwise lets the call through
(the path every allowed call takes).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from spanguard.cli import main
from spanguard.guardrails import Decision, Guard, GuardrailViolation, Policy, RunState, ToolCall
from spanguard.guardrails.enforcer import GUARD_BUILDERS
from spanguard.guardrails.policy import TABLE_PARSERS


class BenchRule(Guard):
    name = "bench_rule"

    def __init__(self, deny: frozenset[str]) -> None:
        self.deny = deny

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        annotations = call.annotations or {}
        if call.tool in self.deny or annotations.get("destructiveHint"):
            reason = f"{call.tool} needs approval"
            return Decision("deny", self.name, reason, error=GuardrailViolation(reason))
        return None


def _parse(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    return {"bench_rule": frozenset(table.get("deny", ()))}


def _build(policy: Policy) -> list[Guard]:
    deny = policy.extras.get("bench_rule")
    return [BenchRule(deny)] if deny is not None else []


TABLE_PARSERS["bench_rule"] = ("extras", _parse)
GUARD_BUILDERS.append(_build)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
