"""LlamaIndex structured output, refused or repaired per the policy, each attempt traced.

``structured_predict(llm, Output, prompt, policy=...)`` is ``llm.structured_predict``
under the policy's ``[structured_output]`` guard, as
:func:`spanguard.plugins.structured_output.structured_output` is for LangChain:
LlamaIndex parses (a program over the LLM: function calling or an output
parser); a failure is typed by
:func:`~spanguard.guardrails.structured.classify_failure` (``syntax_decode_error``
when nothing parseable came back, ``schema_validation_error`` when it does not
fit ``Output``) and either raised as a
:class:`~spanguard.guardrails.structured.StructuredOutputError` or repaired: the
prompt is sent again with what failed (fields and rules, no values), up to
``max_repairs`` more times. Failures that are not about the output (a provider
error) are raised as they are.

The call is one ``structured_output`` span; each failed attempt is a
``guardrail structured_output`` span under it with its attempt number and
``error.type``; each attempt's LLM call is traced by :func:`~spanguard.plugins.
llama_index.instrument` as usual.
"""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar

from llama_index.core.llms import LLM
from llama_index.core.prompts import PromptTemplate
from opentelemetry import metrics, trace
from pydantic import BaseModel, ValidationError

from spanguard.attributes import KIND_CHAIN
from spanguard.config import resolve_tracer_provider
from spanguard.guardrails.enforcer import Enforcer
from spanguard.guardrails.pipeline import build_guards
from spanguard.guardrails.policy import Policy, load_policy
from spanguard.guardrails.structured import (
    RepairRequested,
    StructuredOutput,
    StructuredResult,
    classify_failure,
)
from spanguard.hashing import payload_hash

__all__ = ["structured_predict"]

Model = TypeVar("Model", bound=BaseModel)
SPAN_NAME = "structured_output"
# What LlamaIndex raises when the output is not the structure asked for.
_PARSE_FAILURES = (ValidationError, ValueError, json.JSONDecodeError)


def structured_predict(llm: LLM, output_cls: type[Model], prompt: PromptTemplate, *,
                       policy: Policy | str | os.PathLike[str] | None = None,
                       tracer_provider: trace.TracerProvider | None = None,
                       meter_provider: metrics.MeterProvider | None = None,
                       **prompt_args: Any) -> Model:
    """``llm.structured_predict(output_cls, prompt, **prompt_args)``, guarded."""
    loaded = load_policy(policy) or Policy()
    rules = loaded.structured_output or StructuredOutput()
    loaded = loaded.with_parts(structured_output=rules)
    provider = resolve_tracer_provider(tracer_provider)
    enforcer = Enforcer(loaded, provider, meter_provider,
                        guards=build_guards(loaded, parts=("structured_output",)))
    schema_hash = payload_hash(output_cls.model_json_schema())
    run = enforcer.start_run(SPAN_NAME)
    tracer = provider.get_tracer("spanguard.plugins.llama_index")
    with tracer.start_as_current_span(SPAN_NAME, attributes=dict(KIND_CHAIN)) as span:
        current = prompt
        for attempt in range(1, rules.max_attempts + 1):
            try:
                result: Model = llm.structured_predict(output_cls, current, **prompt_args)
                return result
            except _PARSE_FAILURES as error:
                failure = classify_failure(error, limit=rules.max_errors)
            try:
                enforcer.check_structured_output(
                    run, StructuredResult(attempt, failure, schema_hash), span)
            except RepairRequested as repair:
                current = _with_feedback(prompt, repair.feedback())
    raise AssertionError("unreachable: the last attempt is refused or returned")


def _with_feedback(prompt: PromptTemplate, feedback: str) -> PromptTemplate:
    """The original prompt plus what failed (braces escaped: it is a template)."""
    escaped = feedback.replace("{", "{{").replace("}", "}}")
    return PromptTemplate(f"{prompt.get_template()}\n\n{escaped}")
