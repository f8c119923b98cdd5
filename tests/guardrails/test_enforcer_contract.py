"""The Enforcer records every decision on the span tree and raises refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.trace import Span

from spanguard import semconv as sc
from spanguard.errors import ConfigError
from spanguard.guardrails import (
    Decision,
    Guard,
    GuardrailViolation,
    ModelCall,
    ModelUsage,
    Policy,
    RunState,
    ToolCall,
)
from spanguard.guardrails.enforcer import Enforcer
from spanguard.testing import SpanCapture


class _Refuse(GuardrailViolation):
    guard = "test-guard"
    error_type = "test_refusal"


class _CountingGuard(Guard):
    name = "test-guard"

    def __init__(self, refuse_tool: str) -> None:
        self.refuse_tool = refuse_tool

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        return Decision("allow", self.name, "under limit", {sc.GUARDRAIL_SPEND: run.model_calls})

    def before_tool_call(self, run: RunState, call: ToolCall) -> Decision | None:
        if call.tool == self.refuse_tool:
            return Decision("deny", self.name, "tool not allowed", error=_Refuse("no"))
        return None


def _span(cap: SpanCapture, name: str) -> Span:
    return cap.tracer_provider.get_tracer("t").start_span(name)


def test_allow_is_an_event_and_deny_a_guardrail_span(cap: SpanCapture) -> None:
    enforcer = Enforcer(None, cap.tracer_provider, guards=[_CountingGuard("rm")])
    run = enforcer.start_run("r1")
    model_span = _span(cap, "chat m")
    enforcer.before_model_call(run, ModelCall("m"), model_span)
    enforcer.after_model_call(run, ModelCall("m"), ModelUsage(10, 2, 0.1), model_span)
    model_span.end()
    tool_span = _span(cap, "execute_tool rm")
    with pytest.raises(_Refuse):
        enforcer.before_tool_call(run, ToolCall("rm", {"path": "/"}), tool_span)
    tool_span.end()

    spans = {s.name: s for s in cap.spans()}
    (event,) = spans["chat m"].events
    assert event["name"] == "guardrail test-guard"
    assert event["attributes"][sc.GUARDRAIL_DECISION] == "allow"
    guard_span = spans["guardrail test-guard"]
    assert guard_span.parent_span_id == spans["execute_tool rm"].span_id
    assert guard_span.attributes[sc.GUARDRAIL_DECISION] == "deny"
    assert guard_span.attributes[sc.ERROR_TYPE] == "test_refusal"
    assert guard_span.attributes[sc.OPENINFERENCE_SPAN_KIND] == "GUARDRAIL"
    assert run.input_tokens == [10] and run.model_calls == 1 and run.cost_usd == 0.1


def test_empty_policy_has_no_guards_and_allows_everything(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(), cap.tracer_provider)
    run = enforcer.start_run("r")
    enforcer.before_tool_call(run, ToolCall("anything", {}), None)
    assert cap.spans() == []


def test_policy_file_with_unknown_table_is_refused_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('name = "prod"\n[no_such_table]\nx = 1\n')
    with pytest.raises(ConfigError) as info:
        Policy.from_file(path)
    assert str(path) in str(info.value) and "no_such_table" in str(info.value)


def test_policy_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[[[")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Policy.from_file(path)
