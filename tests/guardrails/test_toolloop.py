"""Tool-loop detection: repeated identical calls and stalled state, refused before they run."""

from __future__ import annotations

import pytest

from spanguard import semconv as sc
from spanguard.guardrails import Policy, ToolCall, ToolLoop, ToolLoopDetected
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.toolloop import MAX_DISTINCT_CALLS, ToolLoopGuard
from spanguard.hashing import payload_hash
from spanguard.testing import SpanCapture


def call_tools(cap: SpanCapture, enforcer: Enforcer,
               calls: list[ToolCall]) -> tuple[list[str], ToolLoopDetected | None]:
    tracer = cap.tracer_provider.get_tracer("test")
    run = enforcer.start_run("run")
    executed = []
    with tracer.start_as_current_span("invoke_agent fake"):
        for call in calls:
            with tracer.start_as_current_span(f"execute_tool {call.tool}") as span:
                try:
                    enforcer.before_tool_call(run, call, span)
                except ToolLoopDetected as refusal:
                    return executed, refusal
                executed.append(call.tool)
    return executed, None


def test_third_identical_call_is_refused(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(tool_loop=ToolLoop(identical_calls=3)),
                        tracer_provider=cap.tracer_provider)
    calls = [ToolCall("search", {"q": "x", "page": 1}),
             ToolCall("search", {"q": "y"}),
             ToolCall("fetch", {"q": "x", "page": 1}),
             ToolCall("search", {"page": 1, "q": "x"}),  # same arguments, other key order
             ToolCall("search", {"q": "x", "page": 1})]
    executed, refusal = call_tools(cap, enforcer, calls)
    assert executed == ["search", "search", "fetch", "search"]
    assert refusal is not None
    assert (refusal.kind, refusal.tool, refusal.count) == ("repeated_call", "search", 3)
    assert refusal.arguments_hash == payload_hash({"q": "x", "page": 1})
    assert refusal.error_type == "tool_loop_detected"
    assert "same arguments" in str(refusal) and "not executed" in str(refusal)
    span = cap.tree().find_all("execute_tool search")[-1].find("guardrail tool_loop")
    assert span.attributes[sc.GUARDRAIL_DECISION] == "deny"
    assert span.attributes[sc.ERROR_TYPE] == "tool_loop_detected"
    assert span.attributes[sc.TOOL_LOOP_COUNT] == 3
    assert span.attributes[sc.TOOL_ARGS_HASH] == refusal.arguments_hash


def test_adapter_supplied_hash_is_used_as_is(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(tool_loop=ToolLoop(identical_calls=2)),
                        tracer_provider=cap.tracer_provider)
    calls = [ToolCall("t", {"a": 1}, arguments_hash="h1"),
             ToolCall("t", {"a": 2}, arguments_hash="h1")]
    executed, refusal = call_tools(cap, enforcer, calls)
    assert executed == ["t"] and refusal is not None and refusal.arguments_hash == "h1"


def test_unchanged_state_over_n_steps_is_no_progress(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(tool_loop=ToolLoop(identical_calls=None, stalled_steps=3)),
                        tracer_provider=cap.tracer_provider)
    states = ["s1", "s2", "s2", "s3", "s3", None, "s3"]
    calls = [ToolCall("plan", {"n": i}, state_hash=s) for i, s in enumerate(states)]
    executed, refusal = call_tools(cap, enforcer, calls)
    assert len(executed) == 6  # calls without a state hash neither count nor reset
    assert refusal is not None
    assert (refusal.kind, refusal.count, refusal.state_hash) == ("no_progress", 3, "s3")
    assert refusal.error_type == "no_progress_error"
    span = cap.tree().find_all("execute_tool plan")[-1].find("guardrail tool_loop")
    assert span.attributes[sc.ERROR_TYPE] == "no_progress_error"
    assert span.attributes[sc.TOOL_LOOP_KIND] == "no_progress"


def test_runs_do_not_share_loop_counts(cap: SpanCapture) -> None:
    enforcer = Enforcer(Policy(tool_loop=ToolLoop(identical_calls=2)),
                        tracer_provider=cap.tracer_provider)
    for key in ("a", "b"):
        enforcer.before_tool_call(enforcer.start_run(key), ToolCall("t", {}), None)


@pytest.mark.parametrize("kwargs", [{"identical_calls": 1}, {"stalled_steps": 0},
                                    {"identical_calls": True}, {"stalled_steps": 2.5}])
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="ToolLoop"):
        ToolLoop(**kwargs)  # type: ignore[arg-type]


def test_a_long_session_remembers_a_bounded_number_of_distinct_calls() -> None:
    guard = ToolLoopGuard(ToolLoop(identical_calls=3))
    run = Enforcer(Policy()).start_run("session")
    for n in range(3 * MAX_DISTINCT_CALLS):
        assert guard.before_tool_call(run, ToolCall("search", {"q": n})) is None
    assert len(run.scratch["spanguard.tool_loop"].counts) == MAX_DISTINCT_CALLS


def test_a_call_that_keeps_repeating_stays_counted_among_many_others() -> None:
    guard = ToolLoopGuard(ToolLoop(identical_calls=3))
    run = Enforcer(Policy()).start_run("session")
    looping = ToolCall("fetch", {"url": "same"})
    assert guard.before_tool_call(run, looping) is None
    for n in range(MAX_DISTINCT_CALLS - 1):  # the repeat is never the least recent
        assert guard.before_tool_call(run, ToolCall("search", {"q": n})) is None
    assert guard.before_tool_call(run, ToolCall("fetch", {"url": "same"})) is None
    for n in range(MAX_DISTINCT_CALLS - 1):
        assert guard.before_tool_call(run, ToolCall("search", {"q": -n - 1})) is None
    decision = guard.before_tool_call(run, ToolCall("fetch", {"url": "same"}))
    assert decision is not None and decision.kind == "deny"
