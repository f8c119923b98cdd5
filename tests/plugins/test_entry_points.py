"""One way in: every plugin entry point takes ``tracer_provider=``, ``meter_provider=`` and
``policy=`` (a Policy, a TOML path, or None = ``SPANGUARD_POLICY``), and a policy is
enforced however it was given; spans land in the given tracer provider and guardrail
decisions are counted in the given meter provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from spanguard import semconv as sc
from spanguard.guardrails.budget import LoopBudgetExceeded
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.window import WindowBudgetExceeded
from spanguard.plugins import llama_index as sg_llama
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.plugins.langgraph_holds import HoldGate, HoldMiddleware
from spanguard.plugins.resilient import ResilientChatModel
from spanguard.testing import SpanCapture
from tests.guardrails.fakes import FakeClock, RateLimitError
from tests.plugins import fakes, lc_fakes
from tests.plugins._llama_index_fixtures import MeteredLLM, build_index

FORMS = ["Policy object", "TOML path", "SPANGUARD_POLICY"]


@pytest.fixture
def given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``given(form, toml)``: the ``policy=`` argument that gives ``toml`` in that form."""

    def make(form: str, text: str) -> Policy | str | None:
        path = tmp_path / "policy.toml"
        path.write_text(text)
        if form == "Policy object":
            return Policy.from_file(path)
        if form == "TOML path":
            return str(path)
        monkeypatch.setenv("SPANGUARD_POLICY", str(path))
        return None

    return make


class Meter:
    """A real SDK meter provider read in memory: decisions counted per (guard, kind)."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def decisions(self) -> dict[tuple[str, str], int]:
        counted: dict[tuple[str, str], int] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != sc.METRIC_GUARDRAIL_DECISIONS:
                        continue
                    for point in metric.data.data_points:
                        key = (str(point.attributes[sc.GUARDRAIL_NAME]),
                               str(point.attributes[sc.GUARDRAIL_DECISION]))
                        counted[key] = counted.get(key, 0) + int(point.value)
        return counted


@pytest.mark.parametrize("form", FORMS)
def test_callback_handler_takes_the_three_keywords(cap: SpanCapture, given: Any,
                                                   form: str) -> None:
    meter = Meter()
    handler = SpanguardCallbackHandler(
        tracer_provider=cap.tracer_provider, meter_provider=meter.provider,
        policy=given(form, "[loop_budget]\nmax_model_calls = 1\n"))
    graph = lc_fakes.react_graph(lc_fakes.ScriptedChatModel(tool_steps=1), [lc_fakes.add])
    with pytest.raises(LoopBudgetExceeded):
        graph.invoke({"messages": [HumanMessage("go")]}, config={"callbacks": [handler]})
    refused = cap.tree().find_all("guardrail loop_budget")
    assert [node.attributes[sc.GUARDRAIL_DECISION] for node in refused] == ["deny"]
    assert meter.decisions()[("loop_budget", "deny")] == 1


def test_callback_handler_keeps_tracer_provider_first_and_the_rest_keyword_only(
        cap: SpanCapture) -> None:
    SpanguardCallbackHandler(cap.tracer_provider)  # 0.1 callers pass it positionally
    with pytest.raises(TypeError):
        SpanguardCallbackHandler(cap.tracer_provider, Policy())  # type: ignore[misc]


class _Ran:
    """A tool that records each run (the hold must keep it from running)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

        @tool
        def add(a: int, b: int) -> int:
            """Add two integers."""
            self.calls.append(a + b)
            return a + b

        self.tool = add


def _add_call() -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c-1"}])


HOLD_ADD = '[holds]\ntools = ["add"]\n'


@pytest.mark.parametrize("form", FORMS)
def test_hold_gate_takes_the_three_keywords(cap: SpanCapture, given: Any, form: str) -> None:
    meter = Meter()
    ran = _Ran()
    gate = HoldGate(policy=given(form, HOLD_ADD), identity="alice",
                    tracer_provider=cap.tracer_provider, meter_provider=meter.provider)
    model = fakes.ScriptedChatModel(model_name="m", script=[_add_call(), "done"])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([ran.tool], wrap_tool_call=gate))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=InMemorySaver())
    paused = graph.invoke({"messages": [HumanMessage("add")]},
                          {"configurable": {"thread_id": form}})
    assert paused["__interrupt__"][0].value["tool"] == "add"
    assert ran.calls == []
    held = cap.tree()  # no handler: the decision is a trace of its own, in the given provider
    assert held.name == "guardrail holds"
    assert held.attributes[sc.GUARDRAIL_DECISION] == "hold"
    assert meter.decisions()[("holds", "hold")] == 1


@pytest.mark.parametrize("form", FORMS)
def test_hold_middleware_takes_the_three_keywords(cap: SpanCapture, given: Any,
                                                  form: str) -> None:
    meter = Meter()
    ran = _Ran()
    middleware = HoldMiddleware(policy=given(form, HOLD_ADD), identity="alice",
                                tracer_provider=cap.tracer_provider,
                                meter_provider=meter.provider)
    agent = create_agent(fakes.ScriptedChatModel(model_name="m", script=[_add_call(), "done"]),
                         [ran.tool], middleware=[middleware], checkpointer=InMemorySaver())
    paused = agent.invoke({"messages": [HumanMessage("add")]},
                          {"configurable": {"thread_id": form}})
    assert paused["__interrupt__"][0].value["tool"] == "add"
    assert ran.calls == []
    assert cap.tree().attributes[sc.GUARDRAIL_DECISION] == "hold"
    assert meter.decisions()[("holds", "hold")] == 1


@pytest.mark.parametrize("form", FORMS)
def test_llama_index_instrument_takes_the_three_keywords(cap: SpanCapture, given: Any,
                                                         form: str) -> None:
    meter = Meter()
    policy = given(form, '[window_budgets.calls]\nscope = "tenant"\nwindow = "hour"\n'
                         'max_model_calls = 1\n')
    llm = MeteredLLM()
    engine = build_index().as_query_engine(llm=llm)
    sg_llama.instrument(tracer_provider=cap.tracer_provider, meter_provider=meter.provider,
                        policy=policy)
    try:
        engine.query("How long do refunds take?")
        with pytest.raises(WindowBudgetExceeded):
            engine.query("And shipping?")
    finally:
        sg_llama.uninstrument()
    assert llm.calls == 1, "the refused call never reached the LLM"
    first, second = cap.trees()
    assert not first.find_all("guardrail window_budget")
    assert second.find("text_completion").attributes[sc.ERROR_TYPE] == "window_budget_exceeded"
    assert meter.decisions()[("window_budget", "deny")] == 1


@pytest.mark.parametrize("form", FORMS)
def test_resilient_chat_model_takes_the_three_keywords(cap: SpanCapture, given: Any,
                                                       form: str) -> None:
    """Its policy's [retry] table is its retry policy, and with a provider given it traces
    (and guards) the calls no handler traces."""
    meter = Meter()
    clock = FakeClock()
    primary = fakes.ScriptedChatModel(model_name="gpt-x", script=[RateLimitError()] * 3)
    fallback = fakes.ScriptedChatModel(model_name="claude-y", script=["hello"])
    model = ResilientChatModel(
        models=[primary, fallback], sleep=clock.sleep, clock=clock,
        tracer_provider=cap.tracer_provider, meter_provider=meter.provider,
        policy=given(form, "[retry]\nmax_attempts = 3\n"
                           "[loop_budget]\nmax_input_tokens = 100000\n"))
    assert model.invoke("hi").content == "hello"
    assert len(primary.calls) == 3 and len(fallback.calls) == 1
    wrapper = cap.tree()
    attempts = [child.attributes[sc.ATTEMPT_ROUTE] for child in wrapper.children]
    assert attempts == ["gpt-x", "gpt-x", "gpt-x", "claude-y"]
    assert meter.decisions()[("loop_budget", "allow")] == 4


def test_resilient_chat_model_explicit_retry_wins_over_the_policy(given: Any) -> None:
    from spanguard.guardrails.retry import RetryPolicy

    model = ResilientChatModel(models=[fakes.ScriptedChatModel(model_name="m", script=[])],
                               retry=RetryPolicy(max_attempts=2),
                               policy=given("TOML path", "[retry]\nmax_attempts = 5\n"))
    assert model.retry.max_attempts == 2


def test_resilient_chat_model_under_a_handler_is_traced_once(cap: SpanCapture) -> None:
    """A handler already tracing the call wins: the model's own handler stays out."""
    other = SpanCapture()
    model = ResilientChatModel(models=[fakes.ScriptedChatModel(model_name="m",
                                                               script=["hi"])],
                               tracer_provider=other.tracer_provider)
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    model.invoke("hi", config={"callbacks": [handler]})
    assert [node.name for node in cap.tree().walk()] == ["chat m", "chat m"]
    assert other.spans() == []


def test_bad_policy_path_is_a_clear_error_at_every_entry_point(tmp_path: Path) -> None:
    from spanguard.errors import ConfigError

    missing = str(tmp_path / "nope.toml")
    builders = [
        lambda: SpanguardCallbackHandler(policy=missing),
        lambda: HoldGate(policy=missing),
        lambda: HoldMiddleware(policy=missing),
        lambda: sg_llama.instrument(policy=missing),
        lambda: ResilientChatModel(models=[fakes.ScriptedChatModel(model_name="m",
                                                                  script=[])],
                                   policy=missing),
    ]
    for build in builders:
        with pytest.raises(ConfigError, match="cannot read policy file"):
            build()
    assert not sg_llama.is_instrumented(), "a refused instrument() installs nothing"
