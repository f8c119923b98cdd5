"""``spanguard`` whose policy files may add a test guard, for the proxy's guardrail tests.

A user guard joins a policy in code (``Policy(guards=...)``); a TOML file cannot
name code. So this harness reads its own ``[test_tools]`` table out of the policy
file before spanguard parses the rest, adds a small real guard to the loaded
``Policy`` through that documented extension point, and runs the real CLI.

Policy table ``[test_tools]``: ``deny = [names]`` refuses those tools,
``refuse_destructive = true`` refuses tools whose annotations say
``destructiveHint``, ``fail_after = [names]`` reports a failed post-call check,
``crash_before = [names]`` / ``crash_after = [names]`` make the guard itself raise
(a bug in a guard) before / after those tools. Importing this module registers
the table in the importing process too, so an in-process test can load the same
policy file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from spanguard.cli import main
from spanguard.guardrails import Decision, Guard, GuardrailViolation, Policy, RunState, ToolCall
from spanguard.guardrails.steps import ToolOutcome


class TestRefusal(GuardrailViolation):
    guard = "test_tools"
    error_type = "test_refusal"


@dataclass(frozen=True)
class TestTools:
    deny: tuple[str, ...] = ()
    refuse_destructive: bool = False
    fail_after: tuple[str, ...] = ()
    crash_before: tuple[str, ...] = ()
    crash_after: tuple[str, ...] = ()


class TestToolsGuard(Guard):
    name = "test_tools"

    def __init__(self, config: TestTools) -> None:
        self.config = config

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        if call.tool in self.config.crash_before:
            raise RuntimeError(f"test guard bug before {call.tool}")
        destructive = bool((call.annotations or {}).get("destructiveHint"))
        if call.tool in self.config.deny or (self.config.refuse_destructive and destructive):
            reason = f"{call.tool} is not allowed for {run.identity} (call {run.tool_calls})"
            return Decision("deny", self.name, reason, error=TestRefusal(reason))
        return Decision("allow", self.name, f"hash {call.arguments_hash}")

    def after_tool_call(self, run: RunState, call: ToolCall,
                        outcome: ToolOutcome) -> Decision | None:
        if call.tool in self.config.crash_after:
            raise RuntimeError(f"test guard bug after {call.tool}")
        if call.tool in self.config.fail_after:
            return Decision("deny", self.name, "state not verified")
        return None


def _parse(table: Mapping[str, Any], source: str) -> TestTools:
    return TestTools(deny=tuple(table.get("deny", ())),
                     refuse_destructive=bool(table.get("refuse_destructive", False)),
                     fail_after=tuple(table.get("fail_after", ())),
                     crash_before=tuple(table.get("crash_before", ())),
                     crash_after=tuple(table.get("crash_after", ())))


_from_mapping = Policy.from_mapping


def _with_test_tools(cls: type[Policy], data: Mapping[str, Any],
                     source: str = "policy") -> Policy:
    rest = {key: value for key, value in data.items() if key != "test_tools"}
    policy = _from_mapping(rest, source)
    if "test_tools" not in data:
        return policy
    return replace(policy, guards=(*policy.guards,
                                   TestToolsGuard(_parse(data["test_tools"], source))))


Policy.from_mapping = classmethod(_with_test_tools)  # type: ignore[method-assign, assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
