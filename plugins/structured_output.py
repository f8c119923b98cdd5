"""Structured output in LangChain, refused or repaired per the policy, each attempt traced.

``structured_output(model, Schema, policy=...)`` is the runnable to use where
``model.with_structured_output(Schema)`` would go. It asks LangChain's own
``with_structured_output(..., include_raw=True)`` (any method: tool calling,
JSON mode, a provider's response format), so parsing is LangChain's; what came
back is typed by :func:`~spanguard.guardrails.structured.classify_failure` and
judged by the policy's ``[structured_output]`` guard:

* usable: the parsed object is returned;
* ``on_failure = "refuse"``: :class:`~spanguard.guardrails.structured.StructuredOutputError`
  is raised with ``error.type`` ``syntax_decode_error`` or
  ``schema_validation_error`` (no partial object is ever returned);
* ``on_failure = "repair"``: the model is asked again, told which fields and
  rules failed (no values), up to ``max_repairs`` more times.

Each attempt's model call is its own span (under a ``structured_output`` chain
span outside LangGraph, under the node inside); each failed attempt adds a
``guardrail structured_output`` span with its attempt number and ``error.type``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from opentelemetry import metrics, trace
from opentelemetry.trace import Span

from spanguard.config import resolve_tracer_provider
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.pipeline import build_guards
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.steps import RunState
from spanguard.guardrails.structured import (
    RepairRequested,
    StructuredOutput,
    StructuredResult,
    classify_failure,
)
from spanguard.hashing import payload_hash
from spanguard.plugins.langchain import run_tracing

__all__ = ["structured_output"]

RUN_NAME = "structured_output"
_PARTS = ("structured_output",)


def structured_output(model: BaseChatModel, schema: Any, *,
                      policy: Policy | str | os.PathLike[str] | None = None,
                      tracer_provider: trace.TracerProvider | None = None,
                      meter_provider: metrics.MeterProvider | None = None,
                      **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
    """``model.with_structured_output(schema, **kwargs)``, guarded.

    ``policy``: its ``[structured_output]`` table (none: refuse at the first failure).
    Decisions are recorded through the providers of the
    :class:`~spanguard.plugins.langchain.SpanguardCallbackHandler` tracing the call,
    else through ``tracer_provider``/``meter_provider``.
    """
    loaded = load_policy(policy) or Policy()
    if loaded.structured_output is None:
        loaded = loaded.with_parts(structured_output=StructuredOutput())
    rules = loaded.structured_output
    assert rules is not None
    bound = model.with_structured_output(schema, include_raw=True, **kwargs)
    schema_hash = _schema_hash(schema)
    guards = build_guards(loaded, parts=_PARTS)
    enforcers: dict[tuple[Any, Any], Enforcer] = {}

    def enforcer_for(tracing: Any) -> Enforcer:
        tracer = (tracing.handler.tracer_provider if tracing is not None
                  else resolve_tracer_provider(tracer_provider))
        meter = tracing.handler.meter_provider if tracing is not None else meter_provider
        found = enforcers.get((tracer, meter))
        if found is None:
            if len(enforcers) >= 16:
                enforcers.clear()
            found = enforcers[(tracer, meter)] = Enforcer(loaded, tracer, meter,
                                                          guards=guards)
        return found

    def attempt_config(run_config: RunnableConfig, attempt: int) -> RunnableConfig:
        return {**run_config, "run_name": f"{RUN_NAME} attempt {attempt}",
                "metadata": {**(run_config.get("metadata") or {}),
                             "spanguard_repair_attempt": attempt}}

    def judge(enforcer: Enforcer, run: RunState, span: Span | None, attempt: int,
              out: Mapping[str, Any]) -> Any:
        """The parsed object, or raises (repair or refuse)."""
        if out.get("parsing_error") is None and out.get("parsed") is not None:
            return out["parsed"]
        failure = classify_failure(out.get("parsing_error"), limit=rules.max_errors)
        enforcer.check_structured_output(run, StructuredResult(attempt, failure, schema_hash),
                                         span)
        raise AssertionError("the structured-output guard let a failure through")

    def start(run_config: RunnableConfig) -> tuple[Enforcer, RunState, Span | None]:
        tracing = run_tracing(run_config.get("callbacks"))
        span = tracing.span if tracing is not None else None
        enforcer = enforcer_for(tracing)
        return enforcer, enforcer.start_run(RUN_NAME), span

    def invoke(value: LanguageModelInput, config: RunnableConfig) -> Any:
        enforcer, run, span = start(config)
        messages = _messages(value)
        for attempt in range(1, rules.max_attempts + 1):
            out: Any = bound.invoke(messages, attempt_config(config, attempt))
            try:
                return judge(enforcer, run, span, attempt, out)
            except RepairRequested as repair:
                messages = [*messages, HumanMessage(repair.feedback())]
        raise AssertionError("unreachable: the last attempt is refused or returned")

    async def ainvoke(value: LanguageModelInput, config: RunnableConfig) -> Any:
        enforcer, run, span = start(config)
        messages = _messages(value)
        for attempt in range(1, rules.max_attempts + 1):
            out: Any = await bound.ainvoke(messages, attempt_config(config, attempt))
            try:
                return judge(enforcer, run, span, attempt, out)
            except RepairRequested as repair:
                messages = [*messages, HumanMessage(repair.feedback())]
        raise AssertionError("unreachable: the last attempt is refused or returned")

    return RunnableLambda(invoke, afunc=ainvoke, name=RUN_NAME)


def _messages(value: LanguageModelInput) -> list[BaseMessage]:
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return [HumanMessage(value)]
    return convert_to_messages(value)


def _schema_hash(schema: Any) -> str | None:
    """Hash of the schema as JSON Schema (a pydantic model's, or a dict as given)."""
    try:
        if isinstance(schema, Mapping):
            return payload_hash(schema)
        dump = getattr(schema, "model_json_schema", None)
        return payload_hash(dump()) if callable(dump) else None
    except Exception:
        return None
