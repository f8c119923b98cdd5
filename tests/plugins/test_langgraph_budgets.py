"""Loop and window budgets through the LangGraph handler (issue 6, "Wiring").

The handler refuses the model call from ``on_chat_model_start``: the model is never
invoked, the refusal is a ``guardrail loop_budget`` span under the refused ``chat``
span, and ``graph.invoke`` raises ``LoopBudgetExceeded``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from pydantic import Field

from spanguard import semconv as sc
from spanguard.guardrails import (
    LoopBudget,
    LoopBudgetExceeded,
    Policy,
    WindowBudget,
    WindowBudgetExceeded,
)
from spanguard.plugins._langchain_quiet import MANAGER_LOGGER, RefusalFilter
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import react_graph

INPUT = {"messages": [HumanMessage("find it")]}


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"nothing about {query} yet"


class LoopingModel(BaseChatModel):
    """Calls ``lookup`` until ``stop_after`` calls (never, by default), reporting usage
    that grows with the history: call k re-sends ``static + growth * k`` tokens, with
    ``noise`` relative jitter. ``invocations`` counts the calls that reached it."""

    static: int = 2000
    growth: int = 500
    noise: float = 0.02
    seed: int = 0
    stop_after: int | None = None
    invocations: int = 0
    reported: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "looping"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": "gpt-loop"}

    def bind_tools(self, tools: Any, **kwargs: Any) -> LoopingModel:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.invocations += 1
        k = self.invocations
        jitter = random.Random(self.seed * 1000 + k).uniform(-self.noise, self.noise)
        tokens = round((self.static + self.growth * k) * (1 + jitter))
        self.reported.append(tokens)
        usage = {"input_tokens": tokens, "output_tokens": 20, "total_tokens": tokens + 20}
        if self.stop_after is not None and k >= self.stop_after:
            message = AIMessage("done", usage_metadata=usage)  # type: ignore[arg-type]
        else:
            message = AIMessage("", usage_metadata=usage,  # type: ignore[arg-type]
                                tool_calls=[{"name": "lookup", "id": f"call-{k}",
                                             "args": {"query": f"q{k}"}}])
        return ChatResult(generations=[ChatGeneration(message=message)])


def run(model: LoopingModel, handler: SpanguardCallbackHandler, **config: Any) -> Any:
    return react_graph(model, [lookup]).invoke(
        INPUT, {"callbacks": [handler], "recursion_limit": 1000, **config})


def test_refused_from_on_chat_model_start_before_the_model_is_invoked(
        cap: SpanCapture) -> None:
    model = LoopingModel(noise=0.0)
    # calls re-send 2500, 3000, 3500, ...: the 4th (4000) would pass 12 000
    limit = 12_000
    handler = SpanguardCallbackHandler(
        cap.tracer_provider, policy=Policy(loop_budget=LoopBudget(max_input_tokens=limit)))
    with pytest.raises(LoopBudgetExceeded) as info:
        run(model, handler)
    assert model.invocations == 3, "the refused call never reached the model"
    assert sum(model.reported) == 9000 == info.value.spent
    assert info.value.limit == limit and info.value.prediction >= 4000

    root = cap.tree()
    assert root.span.status == "ERROR"
    assert root.attributes[sc.ERROR_TYPE] == "loop_budget_exceeded"
    assert root.attributes[sc.RUN_TOTAL_INPUT_TOKENS] == 9000
    chats = root.find_all("chat gpt-loop")
    assert len(chats) == 4
    refused = chats[-1]
    assert refused.span.status == "ERROR"
    assert refused.attributes[sc.ERROR_TYPE] == "loop_budget_exceeded"
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in refused.attributes
    guard = refused.find("guardrail loop_budget")
    assert guard.kind == "GUARDRAIL"
    assert guard.attributes[sc.GUARDRAIL_DECISION] == "deny"
    assert guard.attributes[sc.GUARDRAIL_LIMIT] == limit
    assert guard.attributes[sc.GUARDRAIL_SPEND] == 9000
    assert guard.attributes[sc.GUARDRAIL_PREDICTION] == info.value.prediction
    assert guard.attributes[sc.BUDGET_FIT_U] == pytest.approx(500)
    # the allowed calls carry the decision as an event, not a span
    assert [e["name"] for e in chats[0].span.events] == ["guardrail loop_budget"]


async def test_async_graph_is_refused_too(cap: SpanCapture) -> None:
    model = LoopingModel(noise=0.0)
    handler = SpanguardCallbackHandler(
        cap.tracer_provider, policy=Policy(loop_budget=LoopBudget(max_input_tokens=12_000)))
    with pytest.raises(LoopBudgetExceeded):
        await react_graph(model, [lookup]).ainvoke(
            INPUT, {"callbacks": [handler], "recursion_limit": 1000})
    assert model.invocations == 3


@pytest.mark.parametrize("seed", range(12))
def test_runaway_agent_is_stopped_never_over_its_limit(cap: SpanCapture, seed: int) -> None:
    rng = random.Random(seed)
    model = LoopingModel(static=rng.randint(500, 8000), growth=rng.randint(100, 2000),
                         noise=0.02, seed=seed)
    totals = [sum(model.static + model.growth * k for k in range(1, n + 1))
              for n in (5, 20)]
    limit = rng.randint(*totals)
    handler = SpanguardCallbackHandler(
        cap.tracer_provider, policy=Policy(loop_budget=LoopBudget(max_input_tokens=limit)))
    with pytest.raises(LoopBudgetExceeded):
        run(model, handler)
    assert sum(model.reported) <= limit
    assert model.invocations >= 4  # stopped by the budget, not by anything else
    assert cap.tree().find_all("guardrail loop_budget")


@pytest.mark.parametrize("seed", range(12))
def test_normal_run_under_its_limit_is_never_stopped(cap: SpanCapture, seed: int) -> None:
    rng = random.Random(1000 + seed)
    shape = {"static": rng.randint(500, 8000), "growth": rng.randint(100, 2000),
             "noise": 0.02, "seed": seed, "stop_after": rng.randint(3, 15)}
    used = LoopingModel(**shape)
    run(used, SpanguardCallbackHandler(cap.tracer_provider))
    limit = sum(used.reported) + used.reported[-1]  # one call of headroom
    cap.clear()

    model = LoopingModel(**shape)
    handler = SpanguardCallbackHandler(
        cap.tracer_provider, policy=Policy(loop_budget=LoopBudget(max_input_tokens=limit)))
    result = run(model, handler)
    assert result["messages"][-1].content == "done"
    assert model.invocations == shape["stop_after"]
    assert not cap.tree().find_all("guardrail loop_budget")  # events only, no refusal span


def test_policy_loaded_from_a_toml_file(cap: SpanCapture, tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('name = "agents"\n[loop_budget]\nmax_input_tokens = 12000\n')
    model = LoopingModel(noise=0.0)
    handler = SpanguardCallbackHandler(cap.tracer_provider, policy=path)
    with pytest.raises(LoopBudgetExceeded, match="over the limit of 12,000"):
        run(model, handler)
    assert model.invocations == 3


def test_policy_file_from_the_environment(cap: SpanCapture, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[loop_budget]\nmax_model_calls = 2\n")
    monkeypatch.setenv("SPANGUARD_POLICY", str(path))
    model = LoopingModel()
    with pytest.raises(LoopBudgetExceeded):
        run(model, SpanguardCallbackHandler(cap.tracer_provider))
    assert model.invocations == 2


def test_window_budget_per_tenant_from_run_metadata(cap: SpanCapture) -> None:
    """Tenants are told apart by the keyed hash of metadata ``tenant_id``."""
    policy = Policy(window_budgets=(WindowBudget("tenant_daily", "tenant", "day",
                                                 max_model_calls=5),))
    handler = SpanguardCallbackHandler(cap.tracer_provider, policy=policy)

    first = LoopingModel(stop_after=3)
    run(first, handler, metadata={"tenant_id": "acme"})
    assert first.invocations == 3
    second = LoopingModel(stop_after=3)
    with pytest.raises(WindowBudgetExceeded) as info:
        run(second, handler, metadata={"tenant_id": "acme"})
    assert second.invocations == 2  # acme's 6th call of the day was refused
    assert info.value.scope == "tenant"
    other = LoopingModel(stop_after=3)
    run(other, handler, metadata={"tenant_id": "globex"})  # another tenant, own budget
    assert other.invocations == 3

    refused_run = cap.trees()[1]
    tenant_hash = refused_run.attributes[sc.TENANT_HASH]
    assert tenant_hash != "acme" and tenant_hash.startswith("hmac:")
    guard = refused_run.find("guardrail window_budget")
    assert guard.attributes[sc.BUDGET_SCOPE] == "tenant"
    assert guard.attributes[sc.GUARDRAIL_DECISION] == "deny"
    assert cap.trees()[2].attributes[sc.TENANT_HASH] != tenant_hash


class _BrokenHandler(BaseCallbackHandler):
    """A handler with a genuine bug: LangChain must still log it."""

    run_inline = True

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("broken handler")


def _callback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == MANAGER_LOGGER and r.levelno == logging.WARNING]


def test_a_refusal_is_not_logged_as_a_callback_error(
        cap: SpanCapture, caplog: pytest.LogCaptureFixture) -> None:
    handler = SpanguardCallbackHandler(
        cap.tracer_provider, policy=Policy(loop_budget=LoopBudget(max_input_tokens=12_000)))
    caplog.set_level(logging.WARNING, logger=MANAGER_LOGGER)
    with pytest.raises(LoopBudgetExceeded):
        run(LoopingModel(noise=0.0), handler, callbacks=[_BrokenHandler(), handler])
    messages = _callback_warnings(caplog)
    # the other handler's bug (once per model call that started) is still reported...
    assert len(messages) == 4
    assert all("_BrokenHandler.on_chat_model_start" in m and "broken handler" in m
               for m in messages)
    # ...and the refusal, which did stop the run, is not
    assert not any("LoopBudgetExceeded" in m for m in messages)


async def test_an_async_refusal_is_not_logged_either(
        cap: SpanCapture, caplog: pytest.LogCaptureFixture) -> None:
    handler = SpanguardCallbackHandler(
        cap.tracer_provider, policy=Policy(loop_budget=LoopBudget(max_input_tokens=12_000)))
    caplog.set_level(logging.WARNING, logger=MANAGER_LOGGER)
    with pytest.raises(LoopBudgetExceeded):
        await react_graph(LoopingModel(noise=0.0), [lookup]).ainvoke(
            INPUT, {"callbacks": [handler], "recursion_limit": 1000})
    assert _callback_warnings(caplog) == []


def test_the_filter_is_installed_once_and_passes_unnoted_errors() -> None:
    policy = Policy(loop_budget=LoopBudget(max_input_tokens=12_000))
    SpanguardCallbackHandler(policy=policy)
    SpanguardCallbackHandler(policy=policy)
    installed = [f for f in logging.getLogger(MANAGER_LOGGER).filters
                 if isinstance(f, RefusalFilter)]
    assert len(installed) == 1
    record = logging.LogRecord(MANAGER_LOGGER, logging.WARNING, __file__, 1,
                               "Error in %s.%s callback: %s",
                               ("SpanguardCallbackHandler", "on_chat_model_start",
                                "LoopBudgetExceeded('never raised')"), None)
    assert installed[0].filter(record), "a refusal the handler did not raise is logged"
