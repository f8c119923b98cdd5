"""Langfuse's OpenTelemetry ingestion, re-implemented from its source, for the replay tests.

No Langfuse server runs here (it needs ClickHouse, Postgres, Redis and S3), so the
tests hand the spans spanguard exported to this module, which turns them into the
traces and observations Langfuse would store, by the rules of its source in
``langfuse/langfuse`` ``packages/shared/src/server/otel/`` (read at
``OtelIngestionProcessor.ts`` 19b3e2f0, ``ObservationTypeMapper.ts`` 98bf336c,
``attributes.ts`` b39f2b86), plus the later fix of pull request #14808 (merged
2026-07-06), which stops Langfuse from taking model, usage and cost from spans whose
``gen_ai.operation.name`` is ``invoke_agent`` or ``agent_step``. Each function names the
function or class of Langfuse it follows; where Langfuse has a branch for one SDK only
(the Vercel AI SDK's ``ai.*`` attributes, Pydantic AI, LiveKit, Logfire), it is left out
and the comment says so: spanguard's spans never take it.

What this does not model: Langfuse's own model price list (a generation without a
provided cost would be priced by it; the tests assert none is left without one),
media handling, and the ClickHouse merge of repeated trace upserts beyond "the root's
trace event wins over shallow ones" (``filterRedundantShallowTraces``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# attributes.ts: LangfuseOtelSpanAttributes
TRACE_NAME = "langfuse.trace.name"
TRACE_USER_ID = "user.id"
TRACE_SESSION_ID = "session.id"
TRACE_TAGS = "langfuse.trace.tags"
TRACE_INPUT = "langfuse.trace.input"
TRACE_OUTPUT = "langfuse.trace.output"
OBSERVATION_TYPE = "langfuse.observation.type"
OBSERVATION_INPUT = "langfuse.observation.input"
OBSERVATION_OUTPUT = "langfuse.observation.output"
OBSERVATION_LEVEL = "langfuse.observation.level"
OBSERVATION_STATUS_MESSAGE = "langfuse.observation.status_message"
OBSERVATION_COMPLETION_START_TIME = "langfuse.observation.completion_start_time"
OBSERVATION_MODEL = "langfuse.observation.model.name"
OBSERVATION_USAGE_DETAILS = "langfuse.observation.usage_details"
OBSERVATION_COST_DETAILS = "langfuse.observation.cost_details"
ENVIRONMENT = "langfuse.environment"
AS_ROOT = "langfuse.internal.as_root"

OBSERVATION_TYPES = {"SPAN", "GENERATION", "EVENT", "EMBEDDING", "AGENT", "TOOL", "CHAIN",
                     "RETRIEVER", "GUARDRAIL", "EVALUATOR"}


@dataclass
class Observation:
    id: str
    trace_id: str
    parent_id: str | None
    name: str
    type: str
    start_ns: int
    end_ns: int
    level: str
    status_message: str | None
    model: str | None
    usage: dict[str, float]
    cost: dict[str, float]
    completion_start_time: str | None
    input: Any
    output: Any
    environment: str
    attributes: Mapping[str, Any]

    @property
    def total_tokens(self) -> float:
        """The observation's total as Langfuse stores it: the provided ``total``, else the
        sum of the usage keys (IngestionService's usage handling)."""
        if "total" in self.usage:
            return self.usage["total"]
        return sum(self.usage.values())


@dataclass
class Trace:
    id: str
    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    input: Any = None
    output: Any = None
    tags: list[str] = field(default_factory=list)
    environment: str = "default"
    observations: list[Observation] = field(default_factory=list)

    @property
    def total_cost(self) -> float:
        """The trace's cost: the sum over its observations' cost totals."""
        return sum(o.cost.get("total", 0.0) for o in self.observations)

    @property
    def total_tokens(self) -> float:
        return sum(o.total_tokens for o in self.observations if o.usage)

    def usage(self, key: str) -> float:
        return sum(o.usage.get(key, 0) for o in self.observations)


def has_meaningful_value(value: Any) -> bool:
    """ObservationTypeMapper.ts ``hasMeaningfulValue``."""
    if value is None or value == "":
        return False
    if isinstance(value, (list, tuple, dict)):
        return len(value) > 0
    return True


# ObservationTypeMapper.ts: the SimpleAttributeMapper tables.
_DIRECT = {"span": "SPAN", "generation": "GENERATION", "event": "EVENT",
           "embedding": "EMBEDDING", "agent": "AGENT", "tool": "TOOL", "chain": "CHAIN",
           "retriever": "RETRIEVER", "guardrail": "GUARDRAIL", "evaluator": "EVALUATOR"}
_OPENINFERENCE = {"CHAIN": "CHAIN", "RETRIEVER": "RETRIEVER", "LLM": "GENERATION",
                  "EMBEDDING": "EMBEDDING", "AGENT": "AGENT", "TOOL": "TOOL",
                  "GUARDRAIL": "GUARDRAIL", "EVALUATOR": "EVALUATOR"}
_GENAI_OPERATION = {"chat": "GENERATION", "completion": "GENERATION",
                    "text_completion": "GENERATION", "generate_content": "GENERATION",
                    "generate": "GENERATION", "embeddings": "EMBEDDING",
                    "invoke_agent": "AGENT", "create_agent": "AGENT", "execute_tool": "TOOL"}
_MODEL_KEYS = (OBSERVATION_MODEL, "gen_ai.request.model", "gen_ai.response.model",
               "llm.model_name", "model")


def observation_type(attributes: Mapping[str, Any]) -> str:
    """``ObservationTypeMapperRegistry.mapToObservationType``: the mappers in priority order,
    the first that maps wins, else SPAN. Priority 0 (Langfuse Python SDK <= 3.3.0), 4 and 5
    (Vercel AI SDK operation ids) and 7 (LiveKit span names) need attributes or scopes
    spanguard never writes and are left out."""
    for key, table in ((OBSERVATION_TYPE, _DIRECT), ("openinference.span.kind", _OPENINFERENCE),
                       ("gen_ai.operation.name", _GENAI_OPERATION)):
        value = attributes.get(key)
        if has_meaningful_value(value) and table.get(value) in OBSERVATION_TYPES:
            return table[value]
    # Priority 6 "GenAI_Tool_Call".
    if has_meaningful_value(attributes.get("gen_ai.tool.name")) or \
            has_meaningful_value(attributes.get("gen_ai.tool.call.id")):
        return "TOOL"
    # Priority 8 "ModelBased".
    if any(has_meaningful_value(attributes.get(key)) for key in _MODEL_KEYS):
        return "GENERATION"
    return "SPAN"


_USAGE_KEY_MAPPING = {"prompt_tokens": "input", "completion_tokens": "output",
                      "total_tokens": "total", "input_tokens": "input",
                      "output_tokens": "output", "prompt": "input", "completion": "output"}


def usage_details(attributes: Mapping[str, Any]) -> dict[str, float]:
    """``OtelIngestionProcessor.extractUsageDetails``: the ``usage_details`` JSON first, then
    (the ``ai`` and ``pydantic-ai`` scope branches do not apply) every ``gen_ai.usage.*``
    key but ``gen_ai.usage.cost`` and every ``llm.token_count.*`` key, the prefix cut off
    and the common names mapped to ``input`` / ``output`` / ``total``."""
    provided = attributes.get(OBSERVATION_USAGE_DETAILS)
    if provided:
        try:
            parsed = json.loads(provided)
            if isinstance(parsed, dict):
                return {k: float(v) for k, v in parsed.items()}
        except (TypeError, ValueError):
            pass
    usage: dict[str, float] = {}
    for key, value in attributes.items():
        if not ((key.startswith("gen_ai.usage.") and key != "gen_ai.usage.cost")
                or key.startswith("llm.token_count")):
            continue
        name = key.replace("gen_ai.usage.", "", 1).replace("llm.token_count.", "", 1)
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue  # Number(...) is NaN: skipped
        usage[_USAGE_KEY_MAPPING.get(name, name)] = number
    return usage


def cost_details(attributes: Mapping[str, Any]) -> dict[str, float]:
    """``OtelIngestionProcessor.extractCostDetails``: the ``cost_details`` JSON, else
    ``gen_ai.usage.cost`` as the total."""
    provided = attributes.get(OBSERVATION_COST_DETAILS)
    if provided:
        try:
            parsed = json.loads(provided)
            if isinstance(parsed, dict):
                return {k: float(v) for k, v in parsed.items()}
        except (TypeError, ValueError):
            pass
    if attributes.get("gen_ai.usage.cost"):
        return {"total": float(attributes["gen_ai.usage.cost"])}
    return {}


def model_name(attributes: Mapping[str, Any]) -> str | None:
    """``OtelIngestionProcessor.extractModelName``."""
    for key in (OBSERVATION_MODEL, "gen_ai.response.model", "ai.model.id",
                "gen_ai.request.model", "llm.response.model", "llm.model_name", "model"):
        if attributes.get(key):
            value = attributes[key]
            return value if isinstance(value, str) else json.dumps(value)
    return None


def completion_start_time(attributes: Mapping[str, Any]) -> str | None:
    """``OtelIngestionProcessor.extractCompletionStartTime``: the attribute when it is a
    valid date string (or a JSON-quoted one); the Vercel AI SDK's ``msToFirstChunk``
    branch does not apply."""
    value = attributes.get(OBSERVATION_COMPLETION_START_TIME)
    for candidate in (value, _json(value)):
        if isinstance(candidate, str) and _is_date(candidate):
            return candidate
    return None


def _json(value: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def _is_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


_MESSAGE_EVENTS = ("gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message",
                   "gen_ai.tool.message")


def input_output(attributes: Mapping[str, Any], event_names: Iterable[str],
                 domain: str = "observation") -> tuple[Any, Any]:
    """``OtelIngestionProcessor.extractInputAndOutput``, in its order. The Vercel (scope
    ``ai``), Google ADK, Logfire, LiveKit, MLflow, TraceLoop and Pydantic AI branches key
    on attributes spanguard never writes; their order relative to the ones kept is kept."""
    if domain == "trace" and attributes.get(TRACE_INPUT):
        inp = attributes[TRACE_INPUT]
    else:
        inp = attributes.get(OBSERVATION_INPUT)
    if domain == "trace" and attributes.get(TRACE_OUTPUT):
        out = attributes[TRACE_OUTPUT]
    else:
        out = attributes.get(OBSERVATION_OUTPUT)
    if inp is not None or out is not None:
        return inp, out
    names = list(event_names)
    if any(n in _MESSAGE_EVENTS or n == "gen_ai.choice" for n in names):
        return ([n for n in names if n in _MESSAGE_EVENTS] or None,
                [n for n in names if n == "gen_ai.choice"] or None)
    for source_in, source_out in (("input.value", "output.value"), ("input", "output"),
                                  ("tool_arguments", "tool_response")):
        inp, out = attributes.get(source_in), attributes.get(source_out)
        if inp or out:
            return inp, out
    for prefix_in, prefix_out in (("gen_ai.prompt", "gen_ai.completion"),
                                  ("llm.input_messages", "llm.output_messages")):
        ins = {k: v for k, v in attributes.items() if k.startswith(prefix_in)}
        outs = {k: v for k, v in attributes.items() if k.startswith(prefix_out)}
        if ins or outs:
            return ins, outs
    for source_in, source_out in (("gen_ai.input.messages", "gen_ai.output.messages"),
                                  ("gen_ai.tool.call.arguments", "gen_ai.tool.call.result")):
        inp, out = attributes.get(source_in), attributes.get(source_out)
        if inp or out:
            return inp, out
    return None, None


def user_id(attributes: Mapping[str, Any]) -> str | None:
    """``OtelIngestionProcessor.extractUserId``."""
    return _first(attributes, ("langfuse.user.id", TRACE_USER_ID,
                               "langfuse.observation.metadata.langfuse_user_id",
                               "langfuse.trace.metadata.langfuse_user_id",
                               "ai.telemetry.metadata.userId"))


def session_id(attributes: Mapping[str, Any]) -> str | None:
    """``OtelIngestionProcessor.extractSessionId``."""
    return _first(attributes, ("langfuse.session.id", TRACE_SESSION_ID, "gen_ai.conversation.id",
                               "langfuse.observation.metadata.langfuse_session_id",
                               "langfuse.trace.metadata.langfuse_session_id",
                               "ai.telemetry.metadata.sessionId"))


def _first(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if attributes.get(key):
            value = attributes[key]
            return value if isinstance(value, str) else json.dumps(value)
    return None


def tags(attributes: Mapping[str, Any]) -> list[str]:
    """``OtelIngestionProcessor.extractTags``."""
    value = (attributes.get(TRACE_TAGS) or attributes.get("langfuse.tags")
             or attributes.get("langfuse.observation.metadata.langfuse_tags")
             or attributes.get("langfuse.trace.metadata.langfuse_tags")
             or attributes.get("ai.telemetry.metadata.tags") or attributes.get("tag.tags"))
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(tag) for tag in value]
    if isinstance(value, str) and value.strip().startswith("["):
        parsed = _json(value)
        if isinstance(parsed, list):
            return [str(tag) for tag in parsed]
    if isinstance(value, str) and "," in value:
        return [tag.strip() for tag in value.split(",")]
    return [str(value)]


def environment(attributes: Mapping[str, Any], resource: Mapping[str, Any]) -> str:
    """``OtelIngestionProcessor.extractEnvironment``."""
    for key in (ENVIRONMENT, "deployment.environment.name", "deployment.environment"):
        if attributes.get(key):
            return str(attributes[key])
        if resource.get(key):
            return str(resource[key])
    return "default"


def _has_trace_updates(attributes: Mapping[str, Any]) -> bool:
    """``OtelIngestionProcessor.hasTraceUpdates`` (the exact keys, and any key under
    ``langfuse.trace.metadata``)."""
    exact = (TRACE_NAME, TRACE_INPUT, TRACE_OUTPUT, "langfuse.trace.metadata", TRACE_USER_ID,
             TRACE_SESSION_ID, "langfuse.trace.public", TRACE_TAGS, "langfuse.user.id",
             "langfuse.session.id", "langfuse.observation.metadata.langfuse_user_id",
             "langfuse.observation.metadata.langfuse_session_id",
             "langfuse.observation.metadata.langfuse_tags",
             "langfuse.trace.metadata.langfuse_session_id",
             "langfuse.trace.metadata.langfuse_user_id",
             "langfuse.trace.metadata.langfuse_tags", "ai.telemetry.metadata.sessionId",
             "ai.telemetry.metadata.userId", "ai.telemetry.metadata.tags", "tag.tags")
    return any(attributes.get(key) for key in exact) or any(
        key.startswith("langfuse.trace.metadata") for key in attributes)


# Pull request #14808: these operations restate their children's usage.
_AGGREGATE_OPERATIONS = frozenset({"invoke_agent", "agent_step"})


def ingest(spans: Iterable[Mapping[str, Any]], *, agent_fix: bool = True) -> dict[str, Trace]:
    """``processResourceSpan`` -> ``processSpan`` -> ``createTraceEvent`` /
    ``createObservationEvent`` for every span (the receiver's decoded OTLP spans), and the
    trace upserts merged: the root span's full trace event wins; a non-root span with trace
    updates sets the fields it names (``hasTraceUpdates && !isRootSpan``).
    ``agent_fix=False``: a Langfuse from before pull request #14808."""
    traces: dict[str, Trace] = {}
    for span in spans:
        attributes: Mapping[str, Any] = span["attributes"]
        resource: Mapping[str, Any] = span.get("resource", {})
        trace_id = span["trace_id"]
        trace = traces.setdefault(trace_id, Trace(trace_id))
        is_root = span["parent_span_id"] is None or str(attributes.get(AS_ROOT)) == "true"
        if is_root:
            trace.name = attributes.get(TRACE_NAME) or _name(span["name"], attributes)
            trace.user_id = user_id(attributes)
            trace.session_id = session_id(attributes)
            trace.tags = tags(attributes)
            trace.environment = environment(attributes, resource)
            trace.input, trace.output = input_output(attributes, span["event_names"], "trace")
        elif _has_trace_updates(attributes):
            trace.name = attributes.get(TRACE_NAME) or trace.name
            trace.user_id = user_id(attributes) or trace.user_id
            trace.session_id = session_id(attributes) or trace.session_id
            trace.tags = sorted(set(trace.tags) | set(tags(attributes)))
            trace.input = attributes.get(TRACE_INPUT) or trace.input
            trace.output = attributes.get(TRACE_OUTPUT) or trace.output
        aggregate = agent_fix and \
            attributes.get("gen_ai.operation.name") in _AGGREGATE_OPERATIONS
        inp, out = input_output(attributes, span["event_names"])
        trace.observations.append(Observation(
            id=span["span_id"], trace_id=trace_id, parent_id=span["parent_span_id"],
            name=_name(span["name"], attributes), type=observation_type(attributes),
            start_ns=span["start_time_unix_nano"], end_ns=span["end_time_unix_nano"],
            level=attributes.get(OBSERVATION_LEVEL)
            or ("ERROR" if span["status_code"] == 2 else "DEFAULT"),
            status_message=attributes.get(OBSERVATION_STATUS_MESSAGE)
            or span["status_message"] or None,
            model=None if aggregate else model_name(attributes),
            usage={} if aggregate else usage_details(attributes),
            cost={} if aggregate else cost_details(attributes),
            completion_start_time=completion_start_time(attributes), input=inp, output=out,
            environment=environment(attributes, resource), attributes=attributes))
    return traces


def _name(span_name: str, attributes: Mapping[str, Any]) -> str:
    """``OtelIngestionProcessor.extractName``: the tool's name for a tool call, else the
    span's (the Logfire and Vercel branches do not apply)."""
    tool = attributes.get("gen_ai.tool.name")
    if tool:
        return tool if isinstance(tool, str) else json.dumps(tool)
    return span_name


def iso_of(nanoseconds: int) -> datetime:
    return datetime.fromtimestamp(nanoseconds / 1e9, tz=timezone.utc)
