"""Budgets through the LlamaIndex adapter: the guards see the request's messages, and an
LLM that reports no usage is charged an estimate (issue 14)."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse
from llama_index.core.llms.callbacks import llm_completion_callback

from spanguard import semconv as sc
from spanguard.guardrails import LoopBudget, LoopBudgetExceeded, Policy
from spanguard.guardrails.estimate import text_tokens
from spanguard.testing import SpanCapture
from tests.plugins._llama_index_fixtures import MeteredLLM, build_index, instrumented


class SilentLLM(MeteredLLM):
    """Answers without reporting any usage (MockLLM does the same, uncounted)."""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False,
                 **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text=self.answer)


def test_the_first_call_is_refused_on_its_own_prompt_before_the_llm(cap: SpanCapture) -> None:
    llm = MeteredLLM()
    engine = build_index().as_query_engine(llm=llm)
    policy = Policy(loop_budget=LoopBudget(max_input_tokens=20))  # the prompt is larger
    with instrumented(cap, policy=policy), pytest.raises(LoopBudgetExceeded) as refused:
        engine.query("How long do refunds take?")
    assert llm.calls == 0
    assert refused.value.prediction > 20 and refused.value.spent == 0
    assert "estimate from the prompt" in str(refused.value)


def test_an_llm_without_usage_is_charged_an_estimate(cap: SpanCapture) -> None:
    llm = SilentLLM()
    engine = build_index().as_query_engine(llm=llm)
    with instrumented(cap, policy=Policy(loop_budget=LoopBudget(max_input_tokens=100_000))):
        engine.query("How long do refunds take?")
    assert llm.calls == 1
    chat = cap.tree().find("text_completion gpt-4o-mini").attributes
    assert chat[sc.USAGE_ESTIMATED] is True
    assert chat[sc.GEN_AI_USAGE_INPUT_TOKENS] > 20  # the prompt with its retrieved context
    assert chat[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == text_tokens([llm.answer], llm.model) > 0


def test_an_llm_that_reports_usage_is_not_marked_estimated(cap: SpanCapture) -> None:
    engine = build_index().as_query_engine(llm=MeteredLLM())
    with instrumented(cap, policy=Policy(loop_budget=LoopBudget(max_input_tokens=100_000))):
        engine.query("How long do refunds take?")
    assert sc.USAGE_ESTIMATED not in cap.tree().find("text_completion gpt-4o-mini").attributes
