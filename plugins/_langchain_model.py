"""What a LangChain model run records on its ``chat`` span: request, stream, usage, cost.

The handler opens and closes the span (:mod:`spanguard.plugins.langchain`); this
module fills it in. A graph calls the same model with the same parameters over
and over, so the request attributes are cached by the raw values they are read
from. Usage is the provider's reported usage, else the sum of streamed chunks';
a failed call's usage counts too when the provider reported it (few do). A retry
wrapper's own run (:class:`~spanguard.plugins.resilient.ResilientChatModel`)
carries the routing decision, never usage: its attempts' spans carry that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from spanguard import semconv as sc
from spanguard.attributes import (
    chat_span_name,
    cost_attributes,
    model_attributes,
    usage_attributes,
)
from spanguard.guardrails.steps import ModelUsage
from spanguard.guardrails.transient import error_usage
from spanguard.plugins._langchain_content import CallContent, input_content, output_content
from spanguard.plugins._langchain_extract import (
    Response,
    Usage,
    request_key,
    request_model,
    request_parameters,
    request_provider,
)
from spanguard.plugins._langchain_prompt import reply_text
from spanguard.plugins.resilient import META_ATTEMPT, attempt_attributes, routing_attributes

if TYPE_CHECKING:
    from langchain_core.outputs import LLMResult

    from spanguard.content_budget import ContentBudget
    from spanguard.plugins._langchain_step import Step
    from spanguard.pricing import PriceTable
    from spanguard.spantree import RunEntry, SpanTree
    from spanguard.transcript import Transcript

_REQUEST_CACHE_SIZE = 256  # distinct (model, parameters) combinations remembered
_Request = tuple["str | None", str, dict[str, Any]]


class ModelSpans:
    """The model-call part of one handler's span bookkeeping."""

    __slots__ = ("_budget", "_prices", "_requests", "_tree")

    def __init__(self, tree: SpanTree, prices: PriceTable, budget: ContentBudget | None) -> None:
        self._tree = tree
        self._prices = prices
        self._budget = budget  # None: content capture is off
        self._requests: dict[tuple[Any, ...], _Request] = {}

    def price(self, model: str | None) -> Callable[[int, int], float | None]:
        """(input, output tokens) -> USD for ``model`` (None when its price is unknown)."""
        return partial(self._prices.cost, model)

    def describe(self, params: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None,
                 messages: Sequence[Sequence[Any]], transcript: Transcript | None
                 ) -> tuple[str | None, str, dict[str, Any], CallContent | None]:
        """The request model, the span name, the span's attributes (a fresh dict) and,
        with capture on, what the span captured (content first: the oldest attributes
        are the ones an over-full span would lose)."""
        model, name, request = self._request(params, metadata)
        content: CallContent | None = None
        if self._budget is not None:
            attrs, content = input_content(messages, transcript, self._budget)
            attrs.update(request)
        else:
            attrs = dict(request)
        if metadata and META_ATTEMPT in metadata:
            attrs.update(attempt_attributes(metadata))
        return model, name, attrs, content

    @staticmethod
    def opened(entry: RunEntry, content: CallContent | None) -> None:
        """The span exists: later calls may now reference it as their history."""
        step: Step = entry.data
        step.content = content
        if content is not None and content.recorder is not None:
            content.recorder.span_id = entry.span.get_span_context().span_id

    def _request(self, params: Mapping[str, Any] | None,
                 metadata: Mapping[str, Any] | None) -> _Request:
        """Cached by the raw values read (bounded: cleared when full); never modify it."""
        try:
            key = request_key(params, metadata)
            cached = self._requests.get(key)
        except TypeError:  # an unhashable value where a name or number belongs
            key, cached = None, None
        if cached is None:
            model = request_model(params, metadata)
            cached = (model, chat_span_name(model), model_attributes(
                model, request_provider(params, metadata),
                **request_parameters(params, metadata)))
            if key is not None:
                if len(self._requests) >= _REQUEST_CACHE_SIZE:
                    self._requests.clear()
                self._requests[key] = cached
        return cached

    @staticmethod
    def chunk(entry: RunEntry, chunk: Any) -> None:
        """A streamed chunk: time to the first one, and the usage chunks report."""
        step: Step = entry.data
        if not step.first_token:
            step.first_token = True
            entry.span.set_attributes({
                sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: time.perf_counter() - step.started,
                sc.GEN_AI_REQUEST_STREAM: True,
            })
        usage = getattr(getattr(chunk, "message", None), "usage_metadata", None)
        if usage:
            if step.usage is None:
                step.usage = Usage()
            step.usage.add(usage)

    def response(self, entry: RunEntry, response: LLMResult) -> ModelUsage | None:
        """Set the response attributes; returns what to charge (None for a retry wrapper;
        a usage marked missing, with the reply's text, when the provider reported none)."""
        step: Step = entry.data
        info = Response(response)
        attrs = info.attributes()
        if step.router:
            # Its usage is its last attempt's, already counted on that attempt's span.
            routing = routing_attributes(response)
            if routing:
                attrs.update(routing)
            if self._budget is not None:
                attrs.update(output_content(response, step.content, self._budget))
            entry.span.set_attributes(attrs)
            return None
        usage = info.usage or step.usage
        cost: float | None = None
        if usage is not None:
            usage_attributes(usage.input, usage.output, cache_read=usage.cache_read,
                             cache_creation=usage.cache_creation, reasoning=usage.reasoning,
                             into=attrs)
            cost = self._prices.cost(info.model or step.model, usage.input, usage.output,
                                     usage.cache_read)
            self._tree.add_usage(entry, usage.input, usage.output, cost)
        else:
            self._tree.add_usage(entry, 0, 0, None)
        cost_attributes(cost, into=attrs)
        if self._budget is not None:
            attrs.update(output_content(response, step.content, self._budget))
        entry.span.set_attributes(attrs)
        if usage is None:
            return ModelUsage.missing(reply_text(response))
        return ModelUsage(usage.input, usage.output, cost)

    def failed(self, entry: RunEntry, error: BaseException) -> ModelUsage | None:
        """Usage a failed call reported, recorded like a successful call's; else None."""
        inputs, outputs = error_usage(error)
        if not (inputs or outputs):
            return None
        step: Step = entry.data
        cost = self._prices.cost(step.model, inputs, outputs, 0)
        entry.span.set_attributes({**usage_attributes(inputs, outputs),
                                   **cost_attributes(cost)})
        self._tree.add_usage(entry, inputs, outputs, cost)
        return ModelUsage(inputs, outputs, cost)
