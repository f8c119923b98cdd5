"""LLM spans: model, usage and cost; policy hooks around LLM calls."""

from __future__ import annotations

import pytest
from llama_index.core.llms import MockLLM

from spanguard.guardrails.enforcer import Guard
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.policy import Policy
from spanguard.guardrails.steps import Decision, ModelCall, ModelUsage, RunState
from spanguard.pricing import PriceTable
from spanguard.testing import SpanCapture
from tests.plugins._llama_index_fixtures import MeteredLLM, build_index, instrumented


def test_llm_span_has_model_usage_and_cost(cap: SpanCapture) -> None:
    llm = MeteredLLM()
    engine = build_index().as_query_engine(llm=llm)
    with instrumented(cap, prices=PriceTable.default()):
        engine.query("How long do refunds take?")
    root = cap.tree()
    chat = root.find("text_completion gpt-4o-mini")
    attrs = chat.attributes
    assert chat.kind == "LLM"
    assert attrs["gen_ai.request.model"] == attrs["llm.model_name"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    prompt_tokens = attrs["gen_ai.usage.input_tokens"]
    assert prompt_tokens > 10  # the prompt carries the retrieved context
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["llm.token_count.total"] == prompt_tokens + 5
    expected = PriceTable.default().cost("gpt-4o-mini", prompt_tokens, 5)
    assert expected is not None and attrs["spanguard.cost.usd"] == pytest.approx(expected)
    # Rolled up onto the run's root, counted once although complete() is wrapped twice.
    assert root.attributes["spanguard.run.input_tokens"] == prompt_tokens
    assert root.attributes["spanguard.run.model_calls"] == llm.calls == 1
    assert root.attributes["spanguard.run.cost_usd"] == pytest.approx(expected)


async def test_async_usage_is_counted_once(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM())
    with instrumented(cap):
        await engine.aquery("How long do refunds take?")
    root = cap.tree()
    assert root.attributes["spanguard.run.model_calls"] == 1
    assert root.find("text_completion").attributes["gen_ai.usage.output_tokens"] == 5


def test_unknown_model_has_unknown_cost(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM(model="house-model-7"))
    with instrumented(cap):
        engine.query("refunds?")
    root = cap.tree()
    chat = root.find("text_completion house-model-7").attributes
    assert chat["spanguard.cost.unknown"] is True
    assert "spanguard.cost.usd" not in chat
    assert root.attributes["spanguard.run.cost_unknown"] is True


def test_mock_llm_reports_no_usage(cap: SpanCapture) -> None:
    """MockLLM has no model name and reports no tokens: nothing is invented."""
    engine = build_index().as_query_engine(llm=MockLLM())
    with instrumented(cap):
        engine.query("refunds?")
    chat = cap.tree().find("text_completion")
    assert chat.name == "text_completion"
    assert "gen_ai.usage.input_tokens" not in chat.attributes
    assert chat.attributes["spanguard.cost.unknown"] is True


class _Recorder(Guard):
    """Denies model calls past ``allow`` calls in a run; records what it was shown."""

    name = "model_calls"

    def __init__(self, allow: int) -> None:
        self.allow = allow
        self.seen: list[tuple[str | None, int]] = []

    def before_model_call(self, run: RunState, call: ModelCall) -> Decision | None:
        if run.model_calls >= self.allow:
            return Decision("deny", self.name, f"more than {self.allow} model calls")
        return Decision("allow", self.name)

    def after_model_call(self, run: RunState, call: ModelCall,
                         usage: ModelUsage) -> Decision | None:
        self.seen.append((call.model, usage.input_tokens))
        return None


@pytest.fixture
def recorder() -> _Recorder:
    return _Recorder(allow=0)


def test_denied_model_call_never_reaches_the_llm(cap: SpanCapture,
                                                 recorder: _Recorder) -> None:
    llm = MeteredLLM()
    engine = build_index().as_query_engine(llm=llm)
    with instrumented(cap, policy=Policy(guards=(recorder,))), pytest.raises(GuardrailViolation):
        engine.query("refunds?")
    assert llm.calls == 0
    root = cap.tree()
    chat = root.find("text_completion")
    assert chat.attributes["error.type"] == "guardrail_violation"
    guard_span = chat.find("guardrail model_calls")
    assert guard_span.kind == "GUARDRAIL"
    assert guard_span.attributes["spanguard.guardrail.decision"] == "deny"


def test_allowed_model_call_reports_usage_to_the_policy(cap: SpanCapture,
                                                        recorder: _Recorder) -> None:
    recorder.allow = 1
    llm = MeteredLLM()
    engine = build_index().as_query_engine(llm=llm)
    with instrumented(cap, policy=Policy(guards=(recorder,))):
        engine.query("refunds?")
    assert llm.calls == 1
    prompt_tokens = cap.tree().find("text_completion").attributes["gen_ai.usage.input_tokens"]
    assert recorder.seen == [("gpt-4o-mini", prompt_tokens)]


def test_policy_handler_leaves_with_uninstrument(cap: SpanCapture,
                                                 recorder: _Recorder) -> None:
    llm = MeteredLLM()
    engine = build_index().as_query_engine(llm=llm)
    before = list(llm.callback_manager.handlers)
    with instrumented(cap, policy=Policy(guards=(recorder,))), pytest.raises(GuardrailViolation):
        engine.query("refunds?")
    assert llm.callback_manager.handlers == before
    engine.query("refunds?")  # no policy any more
    assert llm.calls == 1
