"""Every policy table refuses a bad value at load time, naming the table and the key.

One parametrized specification over all tables, so a table added to the policy
without the same checks fails here (see the coverage test at the end).
"""

from __future__ import annotations

from typing import Any

import pytest

from spanguard.errors import ConfigError
from spanguard.guardrails import (
    HoldRules,
    LoopBudget,
    Policy,
    ReadBackCheck,
    RetryPolicy,
    StoreConfig,
    ToolLoop,
    Verification,
    WindowBudget,
)
from spanguard.guardrails.policy import TABLES
from spanguard.guardrails.signing import Signer
from spanguard.guardrails.usage import UsageAccounting

PUBLIC = Signer.generate().public

# (table, its body, the key the error must name)
BAD_TABLES: list[tuple[str, dict[str, Any], str]] = [
    ("loop_budget", {"max_input_tokens": "many"}, "max_input_tokens"),
    ("loop_budget", {"max_cost_usd": -1.0}, "max_cost_usd"),
    ("loop_budget", {"max_model_calls": True}, "max_model_calls"),
    ("loop_budget", {"margin_sigmas": float("nan")}, "margin_sigmas"),
    ("loop_budget", {"stop_on_projected_breach": "yes"}, "stop_on_projected_breach"),
    ("loop_budget", {"max_tokens": 5}, "max_tokens"),
    ("window_budgets", {"w": {"scope": "planet", "max_model_calls": 5}}, "scope"),
    ("window_budgets", {"w": {"scope": "user", "max_input_tokens": 1.5}}, "max_input_tokens"),
    ("window_budgets", {"w": {"scope": "user", "max_model_calls": 5, "mode": "sliding"}},
     "mode"),
    ("window_budgets", {"w": {"scope": "user", "max_model_calls": 5, "burst": 1}}, "burst"),
    ("tool_loop", {"identical_calls": 0}, "identical_calls"),
    ("tool_loop", {"stalled_steps": "3"}, "stalled_steps"),
    ("tool_loop", {"repeats": 3}, "repeats"),
    ("holds", {"tools": "payments_*"}, "tools"),
    ("holds", {"high_risk": "yes"}, "high_risk"),
    ("holds", {"action_classes": ["scary"]}, "action_classes"),
    ("holds", {"classes": {"git_reset": 3}}, "classes"),
    ("holds", {"expires_after": "soon"}, "expires_after"),
    ("holds", {"expires_after": 0}, "expires_after"),
    ("holds", {"risk_tier": ""}, "risk_tier"),
    ("holds", {"show_arguments": 1}, "show_arguments"),
    ("holds", {"typo": 1}, "typo"),
    ("holds", {"read_only": "calculate"}, "read_only"),
    ("holds", {"read_only_servers": [3]}, "read_only_servers"),
    ("holds", {"reviewers": {"maria": {"key": "rsa:AAAA"}}}, "key"),
    ("holds", {"reviewers": {"maria": {}}}, "key"),
    ("holds", {"reviewers": {"maria": {"key": PUBLIC, "tools": "git_*"}}}, "tools"),
    ("holds", {"reviewers": {"maria": {"key": PUBLIC, "action_classes": ["scary"]}}},
     "action_classes"),
    ("holds", {"reviewers": {"maria": {"key": PUBLIC, "may": ["all"]}}}, "may"),
    ("holds", {"reviewers": {"cf\u200bo": {"key": PUBLIC}}}, "invisible"),
    ("audit", {"writer_key": "ed25519:short"}, "writer_key"),
    ("audit", {"writer_key_file": "/etc/spanguard/audit.key"}, "writer_key_file"),
    ("audit", {"signed": True}, "signed"),
    ("verify", {"hold_on_failure": "true"}, "hold_on_failure"),
    ("verify", {"git_commit": {"arguments": {}}}, "call"),
    ("verify", {"git_commit": {"call": "git_log", "arguments": "repo"}}, "arguments"),
    ("verify", {"git_commit": {"call": "git_log", "expect_contains": 3}}, "expect_contains"),
    ("verify", {"git_commit": {"call": "git_log", "retries": 3}}, "retries"),
    ("verify", {"git_commit": "git_log"}, "git_commit"),
    ("retry", {"max_attempts": 0}, "max_attempts"),
    ("retry", {"initial_wait": True}, "initial_wait"),
    ("retry", {"deadline": -1}, "deadline"),
    ("retry", {"circuit_failures": 1.5}, "circuit_failures"),
    ("retry", {"attempts": 3}, "attempts"),
    ("store", {"url": "ftp://x"}, "url"),
    ("store", {"url": 5}, "url"),
    ("store", {"path": "/x.db"}, "path"),
    ("redaction", {"patterns": {"bad name!": "x"}}, "bad name!"),
    ("redaction", {"patterns": {"token": "("}}, "token"),
    ("redaction", {"regexes": {}}, "regexes"),
    ("tool_arguments", {"tools": "send_*"}, "tools"),
    ("tool_arguments", {"max_errors": 0}, "max_errors"),
    ("tool_arguments", {"strict": True}, "strict"),
    ("review", {"min_review_seconds": 0}, "min_review_seconds"),
    ("review", {"min_review_seconds": "2s"}, "min_review_seconds"),
    ("review", {"action": "warn"}, "action"),
    ("tenant_scope", {"metadata_key": ""}, "metadata_key"),
    ("tenant_scope", {"unlabelled": "drop"}, "unlabelled"),
    ("tenant_scope", {"tenant": "acme"}, "tenant"),
    ("citations", {"pattern": "["}, "pattern"),
    ("citations", {"pattern": "source:\\w+"}, "pattern"),
    ("citations", {"action": "drop"}, "action"),
    ("structured_output", {"on_failure": "retry"}, "on_failure"),
    ("structured_output", {"max_repairs": -1}, "max_repairs"),
    ("structured_output", {"repairs": 2}, "repairs"),
    ("usage", {"on_missing_usage": "ignore"}, "on_missing_usage"),
    ("usage", {"on_missing_usage": True}, "on_missing_usage"),
    ("usage", {"reservation_expiry": "later"}, "reservation_expiry"),
    ("usage", {"reservation_expiry": 0}, "reservation_expiry"),
    ("usage", {"estimate": "bytes"}, "estimate"),
]


@pytest.mark.parametrize(("table", "body", "key"), BAD_TABLES,
                         ids=[f"{t}-{k}" for t, _, k in BAD_TABLES])
def test_a_bad_value_is_refused_with_the_table_and_the_key(table: str, body: dict[str, Any],
                                                          key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Policy.from_mapping({table: body}, source="policy.toml")
    message = str(refused.value)
    assert message.startswith(f"policy.toml [{table}]"), message
    assert key in message, message


def test_every_table_has_bad_value_cases() -> None:
    assert {table for table, _, _ in BAD_TABLES} == set(TABLES)


# The same checks when the parts are built in code: the error names the part and key.
BAD_PARTS: list[tuple[Any, str]] = [
    (lambda: LoopBudget(max_input_tokens=-1), "LoopBudget: max_input_tokens"),
    (lambda: WindowBudget("w", "user", max_cost_usd=True), "WindowBudget 'w': max_cost_usd"),
    (lambda: ToolLoop(identical_calls=1), "ToolLoop: identical_calls"),
    (lambda: HoldRules(tools="pay"), "HoldRules: tools"),
    (lambda: HoldRules(expires_after=-5), "HoldRules: expires_after"),
    (lambda: HoldRules(action_classes=frozenset({"scary"})), "HoldRules: action_classes"),
    (lambda: ReadBackCheck(""), "ReadBackCheck: call"),
    (lambda: Verification({"t": "not a function"}), "Verification: verifiers.t"),
    (lambda: Verification(hold_on_failure=1), "Verification: hold_on_failure"),
    (lambda: RetryPolicy(max_wait=-1), "RetryPolicy: max_wait"),
    (lambda: StoreConfig("mysql://db"), "store: unknown store scheme"),
    (lambda: UsageAccounting(on_missing_usage="skip"),  # type: ignore[arg-type]
     "UsageAccounting: on_missing_usage"),
    (lambda: UsageAccounting(reservation_expiry=-1), "UsageAccounting: reservation_expiry"),
]


@pytest.mark.parametrize(("build", "message"), BAD_PARTS, ids=[m for _, m in BAD_PARTS])
def test_parts_built_in_code_are_checked_the_same_way(build: Any, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build()
    assert str(refused.value).startswith(message), str(refused.value)


def test_list_values_in_code_become_tuples() -> None:
    rules = HoldRules(tools=["pay_*"], action_classes={"destructive"})  # type: ignore[arg-type]
    assert rules.tools == ("pay_*",) and rules.action_classes == frozenset({"destructive"})
