"""``ResilientChatModel``: retries and fallbacks as a real LangChain chat model.

It is a ``BaseChatModel`` over an ordered list of chat models (routes), so
``bind_tools``, ``with_structured_output``, streaming and async work and it drops
into ``create_agent``, ``ToolNode`` graphs and chains unchanged. Every decision
(retry, wait, fail over, skip an open circuit) is made by the framework-free
:class:`~spanguard.guardrails.routing.Router`; this module only translates.

The tracing contract with ``SpanguardCallbackHandler`` (all keys are constants
here, helpers below read them):

- the wrapper's own run has local metadata ``spanguard_router=True``
  (:func:`is_router_run`): its attempts are the real model calls, so the handler
  must not roll the wrapper's usage up nor run the budget guard on it;
- each attempt is a CHILD chat-model run of the wrapper's run, with metadata
  ``spanguard_route``, ``spanguard_attempt`` (1-based across the call) and
  ``spanguard_is_retry`` (:func:`attempt_attributes`, :func:`attempt_is_retry`);
  a failed attempt's run ends with the provider's exception
  (``error.type`` = ``classify(error).reason``);
- the routing decision is a flat dict keyed by :mod:`spanguard.semconv` names at
  ``llm_output["spanguard"]`` (non-streaming) and, in both modes, at
  ``generations[0][0].message.response_metadata["spanguard"]``
  (:func:`routing_attributes`); when the call fails, on the error
  (:func:`~spanguard.guardrails.routing.error_routing_attributes`).

Like every entry point it takes ``policy=`` (its ``[retry]`` table is the retry
policy unless ``retry=`` is given) and ``tracer_provider=``/``meter_provider=``:
with either provider, a call that no ``SpanguardCallbackHandler`` traces is traced
(and guarded by the policy) by a handler built from these three arguments; a
handler already in the call's callbacks wins, so nothing is recorded twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spanguard.extras import missing_extra

try:
    from langchain_core.callbacks import (
        AsyncCallbackManager,
        AsyncCallbackManagerForLLMRun,
        BaseCallbackHandler,
        BaseCallbackManager,
        CallbackManager,
        CallbackManagerForLLMRun,
        Callbacks,
    )
    from langchain_core.language_models import BaseChatModel, LanguageModelInput
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
    from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
    from langchain_core.runnables.config import set_config_context
    from langchain_core.runnables.utils import coro_with_context
    from opentelemetry import metrics, trace
    from pydantic import Field, PrivateAttr, model_validator
except ModuleNotFoundError as exc:
    raise missing_extra(__name__, exc, "langgraph") from exc

from spanguard import semconv as sc
from spanguard.guardrails.circuit import CircuitBreakers
from spanguard.guardrails.errors import AllRoutesFailed
from spanguard.guardrails.policy import load_policy
from spanguard.guardrails.retry import RetryPolicy
from spanguard.guardrails.routing import Attempt, Router, error_routing_attributes

__all__ = [
    "META_ATTEMPT",
    "META_IS_RETRY",
    "META_ROUTE",
    "META_ROUTER",
    "ROUTING_KEY",
    "AllRoutesFailed",
    "ResilientChatModel",
    "attempt_attributes",
    "attempt_is_retry",
    "error_routing_attributes",
    "is_router_run",
    "routing_attributes",
]

ROUTING_KEY = "spanguard"
META_ROUTER = "spanguard_router"
META_ROUTE = "spanguard_route"
META_ATTEMPT = "spanguard_attempt"
META_IS_RETRY = "spanguard_is_retry"
# LangGraph's TAG_NOSTREAM: stream_mode="messages" then streams the wrapper's
# tokens once, not once more for the attempt underneath it.
_TAG_NOSTREAM = "nostream"
# Private keyword argument carrying the wrapper's run to ``_stream``/``_astream``:
# langchain-core calls those without the run manager it passes to ``_generate``.
_PARENT = "_spanguard_parent"


@dataclass(frozen=True, slots=True)
class _Parent:
    """The wrapper's own run (its id is fixed before the run starts) and its config."""

    run_id: uuid.UUID
    callbacks: Callbacks
    tags: list[str]
    metadata: dict[str, Any]


class ResilientChatModel(BaseChatModel):
    """Try ``models`` in order, retrying transient failures per ``retry``.

    ``retry``: default, the ``[retry]`` table of ``policy`` (a
    :class:`~spanguard.guardrails.policy.Policy`, a path to a policy TOML file, or
    None for ``SPANGUARD_POLICY``), else ``RetryPolicy()``.
    ``tracer_provider``/``meter_provider``: trace calls no handler traces (see above).
    ``route_names`` name the routes in the trace (default: each model's
    ``ls_model_name``); ``route_capabilities`` (route name -> labels such as
    ``["vision", "tools"]``) lets the decision say what a fallback lost
    (``capability_delta``); the policy's ``version`` is recorded as
    ``policy_version``. ``sleep``/``asleep``/``clock`` are injectable for tests;
    ``breakers`` may be shared between wrappers to share circuit state.
    """

    models: list[BaseChatModel]
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    # Policy | str | os.PathLike[str] | None: checked by load_policy (a Policy is not a
    # pydantic type; validating it here would copy it field by field).
    policy: Any = Field(default=None, exclude=True)
    tracer_provider: trace.TracerProvider | None = Field(default=None, exclude=True)
    meter_provider: metrics.MeterProvider | None = Field(default=None, exclude=True)
    route_names: list[str] | None = None
    route_capabilities: dict[str, list[str]] | None = None
    policy_version: str | None = None
    breakers: CircuitBreakers | None = None
    sleep: Callable[[float], None] = time.sleep
    asleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic

    _router: Router = PrivateAttr()
    _routes: tuple[Runnable[Any, Any], ...] = PrivateAttr()
    _tracing: BaseCallbackHandler | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        # Read before pydantic validates: a bad policy file raises its ConfigError as it
        # is, not wrapped in a ValidationError.
        if "retry" not in data or "policy_version" not in data:
            loaded = load_policy(data.get("policy"))
            if loaded is not None and loaded.retry is not None and "retry" not in data:
                data["retry"] = loaded.retry
            if loaded is not None and "policy_version" not in data:
                data["policy_version"] = loaded.version
        super().__init__(**data)

    @model_validator(mode="after")
    def _build_router(self) -> ResilientChatModel:
        if not self.models:
            raise ValueError("ResilientChatModel needs at least one model in models=[...]")
        names = self.route_names or _default_names(self.models)
        if len(names) != len(self.models):
            raise ValueError(f"route_names has {len(names)} names for {len(self.models)} "
                             "models; give one name per model")
        if self.breakers is None:
            self.breakers = CircuitBreakers(self.retry.circuit_failures,
                                            self.retry.circuit_cooldown, self.clock)
        self.route_names = list(names)
        self.metadata = {**(self.metadata or {}), META_ROUTER: True}
        self._router = Router(names, self.retry, breakers=self.breakers, sleep=self.sleep,
                              asleep=self.asleep, clock=self.clock,
                              capabilities=self.route_capabilities,
                              policy_version=self.policy_version)
        self._routes = tuple(self.models)
        return self

    @property
    def _llm_type(self) -> str:
        return "spanguard-resilient"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"routes": list(self._router.routes)}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "spanguard"
        params["ls_model_name"] = self._router.routes[0]
        return params

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on every route (each provider converts them its own way)."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        bound = []
        for name, model in zip(self._router.routes, self.models, strict=True):
            try:
                bound.append(model.bind_tools(tools, **kwargs))
            except NotImplementedError as exc:
                raise NotImplementedError(
                    f"route {name!r} ({type(model).__name__}) cannot bind tools, so the "
                    "wrapper cannot either; remove that route or use a model with "
                    "tool calling") from exc
        copy = self.model_copy()
        copy._routes = tuple(bound)
        return copy

    # --- entry points: fix the run id so attempts can name it as their parent ------

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        config, kwargs = _with_parent(config, kwargs, self._own_handler())
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None,
                      *, stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        config, kwargs = _with_parent(config, kwargs, self._own_handler())
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        config, kwargs = _with_parent(config, kwargs, self._own_handler())
        yield from super().stream(input, config, stop=stop, **kwargs)

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None,
                      *, stop: list[str] | None = None,
                      **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        config, kwargs = _with_parent(config, kwargs, self._own_handler())
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    def _own_handler(self) -> BaseCallbackHandler | None:
        """The handler tracing calls no other handler traces; None without providers."""
        if self.tracer_provider is None and self.meter_provider is None:
            return None
        if self._tracing is None:
            # Imported here: the handler's module imports this one.
            from spanguard.plugins.langchain import SpanguardCallbackHandler

            self._tracing = SpanguardCallbackHandler(
                self.tracer_provider, policy=self.policy, meter_provider=self.meter_provider)
        return self._tracing

    def _get_invocation_params(self, stop: list[str] | None = None,
                               **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(_PARENT, None)
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        kwargs.pop(_PARENT, None)
        return super()._get_llm_string(stop=stop, **kwargs)

    # --- sync -----------------------------------------------------------------------

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        callbacks = _child_callbacks(run_manager, kwargs.pop(_PARENT, None))

        def call(attempt: Attempt) -> BaseMessage:
            config = _attempt_config(callbacks, attempt)
            route = self._routes[attempt.index]
            # Run the attempt with its config as the ambient one: inside a LangGraph
            # node a RunnableBinding (bind_tools) would otherwise merge in the node's
            # callbacks and parent the attempt to the node instead of the wrapper.
            with set_config_context(config) as context:
                result: BaseMessage = context.run(route.invoke, messages, config, stop=stop,
                                                  **kwargs)
            return result

        message, outcome = self._router.run(call)
        return _result(message, outcome.attributes())

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        callbacks = _child_callbacks(run_manager, kwargs.pop(_PARENT, None))

        def call(attempt: Attempt) -> tuple[BaseMessageChunk | None, Iterator[Any]]:
            config = _attempt_config(callbacks, attempt)
            route = self._routes[attempt.index]
            with set_config_context(config) as context:
                chunks = iter(route.stream(messages, config, stop=stop, **kwargs))
                # failures before the first chunk are retried; after it, they are not
                first: BaseMessageChunk | None = context.run(next, chunks, None)
            return first, chunks

        (pending, chunks), outcome = self._router.run(call)
        try:
            for chunk in chunks:
                yield _chunk(pending)
                pending = chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        yield _chunk(pending, outcome.attributes())

    # --- async ----------------------------------------------------------------------

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        callbacks = _child_callbacks(run_manager, kwargs.pop(_PARENT, None), asynchronous=True)

        async def call(attempt: Attempt) -> BaseMessage:
            config = _attempt_config(callbacks, attempt)
            route = self._routes[attempt.index]
            with set_config_context(config) as context:
                result: BaseMessage = await coro_with_context(
                    route.ainvoke(messages, config, stop=stop, **kwargs), context)
            return result

        message, outcome = await self._router.arun(call)
        return _result(message, outcome.attributes())

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        callbacks = _child_callbacks(run_manager, kwargs.pop(_PARENT, None), asynchronous=True)

        async def call(attempt: Attempt) -> tuple[BaseMessageChunk | None, AsyncIterator[Any]]:
            config = _attempt_config(callbacks, attempt)
            route = self._routes[attempt.index]
            with set_config_context(config) as context:
                chunks = aiter(route.astream(messages, config, stop=stop, **kwargs))
                first = await coro_with_context(_first(chunks), context)
            return first, chunks

        (pending, chunks), outcome = await self._router.arun(call)
        try:
            async for chunk in chunks:
                yield _chunk(pending)
                pending = chunk
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        yield _chunk(pending, outcome.attributes())


async def _first(chunks: AsyncIterator[Any]) -> Any:
    return await anext(chunks, None)


def _default_names(models: Sequence[BaseChatModel]) -> list[str]:
    names: list[str] = []
    for model in models:
        base = model._get_ls_params().get("ls_model_name") or model._llm_type
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}#{n}"
        names.append(name)
    return names


def _with_parent(config: RunnableConfig | None, kwargs: dict[str, Any],
                 tracing: BaseCallbackHandler | None) -> tuple[RunnableConfig, dict[str, Any]]:
    config = ensure_config(config)
    if tracing is not None:
        config["callbacks"] = _with_tracing(config.get("callbacks"), tracing)
    run_id = config.get("run_id") or uuid.uuid4()
    config["run_id"] = run_id
    parent = _Parent(run_id, config.get("callbacks"), list(config.get("tags") or []),
                     dict(config.get("metadata") or {}))
    return config, {**kwargs, _PARENT: parent}


def _with_tracing(callbacks: Callbacks, tracing: BaseCallbackHandler) -> Callbacks:
    """``callbacks`` plus ``tracing``, unless a handler of its class is among them already
    (a graph's handler traces the call: a second one would record it twice)."""
    handlers = callbacks if isinstance(callbacks, list) else getattr(callbacks, "handlers", ())
    if any(isinstance(handler, type(tracing)) for handler in handlers):
        return callbacks
    if callbacks is None:
        return [tracing]
    if isinstance(callbacks, list):
        return [*callbacks, tracing]
    manager = callbacks.copy()  # the caller's manager stays as it was
    manager.add_handler(tracing, inherit=True)
    return manager


def _child_callbacks(
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        parent: _Parent | None, *, asynchronous: bool = False,
) -> BaseCallbackManager | None:
    """Callbacks that make an attempt a child run of the wrapper's run.

    From the run manager when langchain-core passes one (``_generate``), else from
    the wrapper's config and pre-assigned run id (``_stream``). Either way the
    wrapper's ``ls_*`` params stay out: an attempt reports its own model.
    """
    manager: BaseCallbackManager
    cls = AsyncCallbackManager if asynchronous else CallbackManager
    if run_manager is not None:
        manager = cls(handlers=[], parent_run_id=run_manager.run_id)
        manager.set_handlers(run_manager.inheritable_handlers)
        manager.add_tags(run_manager.inheritable_tags)
        metadata = run_manager.inheritable_metadata
    elif parent is not None:
        manager = cls.configure(parent.callbacks, None, False, parent.tags, None,
                                parent.metadata, None)
        manager.parent_run_id = parent.run_id
        metadata = dict(manager.inheritable_metadata)
        manager.metadata.clear()
        manager.inheritable_metadata.clear()
    else:
        return None
    manager.add_metadata({key: value for key, value in metadata.items()
                          if not key.startswith("ls_")})
    return manager


def _attempt_config(callbacks: Any, attempt: Attempt) -> RunnableConfig:
    return {
        "callbacks": callbacks,
        "tags": [_TAG_NOSTREAM, f"spanguard:attempt:{attempt.number}"],
        "metadata": {META_ROUTE: attempt.route, META_ATTEMPT: attempt.number,
                     META_IS_RETRY: attempt.is_retry},
    }


def _result(message: BaseMessage, attrs: dict[str, Any]) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)],
                      llm_output={ROUTING_KEY: attrs})


def _chunk(message: BaseMessageChunk | None,
           attrs: dict[str, Any] | None = None) -> ChatGenerationChunk:
    if message is None:
        message = AIMessageChunk(content="")
    info = {ROUTING_KEY: attrs} if attrs is not None else None
    return ChatGenerationChunk(message=message, generation_info=info)


# --- the handler's side of the contract ----------------------------------------------


def is_router_run(metadata: Mapping[str, Any] | None) -> bool:
    """True for the wrapper's own run: record it, but its attempts carry the usage."""
    return bool(metadata and metadata.get(META_ROUTER) is True)


def attempt_is_retry(metadata: Mapping[str, Any] | None) -> bool:
    """``ModelCall.is_retry`` for a chat-model run (False for any non-attempt run)."""
    return bool(metadata and metadata.get(META_IS_RETRY) is True)


def attempt_attributes(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Span attributes of one attempt run ({} for a run that is not an attempt)."""
    if not metadata or META_ATTEMPT not in metadata:
        return {}
    return {sc.ATTEMPT_NUMBER: metadata[META_ATTEMPT],
            sc.ATTEMPT_ROUTE: metadata.get(META_ROUTE),
            sc.ATTEMPT_IS_RETRY: bool(metadata.get(META_IS_RETRY))}


def routing_attributes(response: LLMResult) -> dict[str, Any] | None:
    """The wrapper's routing decision from its ``on_llm_end`` response (streamed or not)."""
    if response.llm_output and isinstance(response.llm_output.get(ROUTING_KEY), dict):
        return dict(response.llm_output[ROUTING_KEY])
    for generations in response.generations:
        for generation in generations:
            info = generation.generation_info or {}
            attrs = info.get(ROUTING_KEY)
            if attrs is None and isinstance(generation, ChatGeneration):
                attrs = generation.message.response_metadata.get(ROUTING_KEY)
            if isinstance(attrs, dict):
                return dict(attrs)
    return None
