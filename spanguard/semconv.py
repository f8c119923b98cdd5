"""Every attribute name spanguard writes, in one module.

Standard names come from the packages that define them
(``opentelemetry-semantic-conventions`` for ``gen_ai.*``/``mcp.*``/``error.type``
and ``openinference-semantic-conventions`` for Phoenix's vocabulary), never typed
by hand. Names that neither standard has live under ``spanguard.*`` here, so a
reader can see at a glance which attributes are ours.

Pinned conventions (one place): the OpenTelemetry GenAI and MCP semantic
conventions as released in **OpenTelemetry semantic conventions v1.41.0**
(:data:`GENAI_SEMCONV_VERSION`; the last core release before they moved to the
``semantic-conventions-genai`` repository, where they have made no release yet),
the latest experimental GenAI form (what ``OTEL_SEMCONV_STABILITY_OPT_IN=
gen_ai_latest_experimental`` selects in other instrumentations: ``gen_ai.provider.name``,
``gen_ai.input.messages`` / ``gen_ai.output.messages`` as JSON in the ``parts`` shape);
and OpenInference as ``openinference-semantic-conventions`` defines it. Every tracer
spanguard creates names :data:`SEMCONV_SCHEMA_URL`, so a backend can tell which
version a span follows.

A few 0.x names are still written beside their ``spanguard.*`` replacement for one
release, where the duplicate is cheap (:data:`DEPRECATED_NAMES` lists them; they go in
the next release).
"""

from __future__ import annotations

from typing import Final

from openinference.semconv.trace import (
    DocumentAttributes,
    MessageAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolCallAttributes,
)
from opentelemetry.semconv._incubating.attributes import (
    gen_ai_attributes as _gen_ai,
)
from opentelemetry.semconv._incubating.attributes import (
    jsonrpc_attributes as _jsonrpc,
)
from opentelemetry.semconv._incubating.attributes import (
    mcp_attributes as _mcp,
)
from opentelemetry.semconv._incubating.attributes import (
    network_attributes as _network,
)
from opentelemetry.semconv._incubating.attributes import (
    rpc_attributes as _rpc,
)
from opentelemetry.semconv._incubating.attributes import (
    session_attributes as _session,
)
from opentelemetry.semconv._incubating.attributes import (
    user_attributes as _user,
)
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _gen_ai_metrics
from opentelemetry.semconv._incubating.metrics import mcp_metrics as _mcp_metrics
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import exception_attributes as _exception
from opentelemetry.semconv.schemas import Schemas

# --- the pinned versions ---------------------------------------------------------
GENAI_SEMCONV_VERSION: Final = "1.41.0"
SEMCONV_SCHEMA_URL: Final = Schemas.V1_41_0.value

# --- OpenTelemetry GenAI -----------------------------------------------------
GEN_AI_OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_AGENT_NAME: Final = _gen_ai.GEN_AI_AGENT_NAME
GEN_AI_CONVERSATION_ID: Final = _gen_ai.GEN_AI_CONVERSATION_ID
GEN_AI_REQUEST_MODEL: Final = _gen_ai.GEN_AI_REQUEST_MODEL
GEN_AI_RESPONSE_MODEL: Final = _gen_ai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_ID: Final = _gen_ai.GEN_AI_RESPONSE_ID
GEN_AI_REQUEST_TEMPERATURE: Final = _gen_ai.GEN_AI_REQUEST_TEMPERATURE
GEN_AI_REQUEST_TOP_P: Final = _gen_ai.GEN_AI_REQUEST_TOP_P
GEN_AI_REQUEST_MAX_TOKENS: Final = _gen_ai.GEN_AI_REQUEST_MAX_TOKENS
GEN_AI_REQUEST_STREAM: Final = _gen_ai.GEN_AI_REQUEST_STREAM
GEN_AI_RESPONSE_FINISH_REASONS: Final = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = _gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
GEN_AI_USAGE_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = (
    _gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
)
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
GEN_AI_TOOL_NAME: Final = _gen_ai.GEN_AI_TOOL_NAME
GEN_AI_TOOL_CALL_ID: Final = _gen_ai.GEN_AI_TOOL_CALL_ID
GEN_AI_TOOL_CALL_ARGUMENTS: Final = _gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS
GEN_AI_TOOL_CALL_RESULT: Final = _gen_ai.GEN_AI_TOOL_CALL_RESULT
GEN_AI_TOOL_TYPE: Final = _gen_ai.GEN_AI_TOOL_TYPE
GEN_AI_DATA_SOURCE_ID: Final = _gen_ai.GEN_AI_DATA_SOURCE_ID
GEN_AI_INPUT_MESSAGES: Final = _gen_ai.GEN_AI_INPUT_MESSAGES
GEN_AI_OUTPUT_MESSAGES: Final = _gen_ai.GEN_AI_OUTPUT_MESSAGES
GEN_AI_RETRIEVAL_QUERY_TEXT: Final = _gen_ai.GEN_AI_RETRIEVAL_QUERY_TEXT
GEN_AI_TOKEN_TYPE: Final = _gen_ai.GEN_AI_TOKEN_TYPE
GEN_AI_SYSTEM_INSTRUCTIONS: Final = _gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS
GEN_AI_PROMPT: Final = _gen_ai.GEN_AI_PROMPT  # deprecated, still sent by older SDKs
GEN_AI_COMPLETION: Final = _gen_ai.GEN_AI_COMPLETION  # deprecated, likewise
OperationName = _gen_ai.GenAiOperationNameValues
TokenType = _gen_ai.GenAiTokenTypeValues
# The well-known ``gen_ai.provider.name`` values of the pinned version.
ProviderName = _gen_ai.GenAiProviderNameValues

# GenAI client metrics (names from the conventions package).
METRIC_GEN_AI_TOKEN_USAGE: Final = _gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
METRIC_GEN_AI_OPERATION_DURATION: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
# MCP metrics: the proxy's and instrument_server's SERVER spans, the read-back's CLIENT span.
METRIC_MCP_SERVER_OPERATION_DURATION: Final = _mcp_metrics.MCP_SERVER_OPERATION_DURATION
METRIC_MCP_CLIENT_OPERATION_DURATION: Final = _mcp_metrics.MCP_CLIENT_OPERATION_DURATION

ERROR_TYPE: Final = _error.ERROR_TYPE
EXCEPTION_MESSAGE: Final = _exception.EXCEPTION_MESSAGE
EXCEPTION_STACKTRACE: Final = _exception.EXCEPTION_STACKTRACE
SESSION_ID: Final = _session.SESSION_ID
USER_HASH: Final = _user.USER_HASH

# --- MCP / JSON-RPC -----------------------------------------------------------
MCP_METHOD_NAME: Final = _mcp.MCP_METHOD_NAME
MCP_SESSION_ID: Final = _mcp.MCP_SESSION_ID
MCP_PROTOCOL_VERSION: Final = _mcp.MCP_PROTOCOL_VERSION
JSONRPC_REQUEST_ID: Final = _jsonrpc.JSONRPC_REQUEST_ID
RPC_RESPONSE_STATUS_CODE: Final = _rpc.RPC_RESPONSE_STATUS_CODE
NETWORK_TRANSPORT: Final = _network.NETWORK_TRANSPORT

# --- OpenInference ------------------------------------------------------------
OPENINFERENCE_SPAN_KIND: Final = SpanAttributes.OPENINFERENCE_SPAN_KIND
SpanKind = OpenInferenceSpanKindValues
OI_SESSION_ID: Final = SpanAttributes.SESSION_ID
OI_USER_ID: Final = SpanAttributes.USER_ID
OI_METADATA: Final = SpanAttributes.METADATA
OI_INPUT_VALUE: Final = SpanAttributes.INPUT_VALUE
OI_OUTPUT_VALUE: Final = SpanAttributes.OUTPUT_VALUE
OI_LLM_MODEL_NAME: Final = SpanAttributes.LLM_MODEL_NAME
OI_LLM_PROVIDER: Final = SpanAttributes.LLM_PROVIDER
OI_LLM_SYSTEM: Final = SpanAttributes.LLM_SYSTEM
OI_INPUT_MIME_TYPE: Final = SpanAttributes.INPUT_MIME_TYPE
OI_OUTPUT_MIME_TYPE: Final = SpanAttributes.OUTPUT_MIME_TYPE
OI_TAG_TAGS: Final = SpanAttributes.TAG_TAGS
OI_LLM_INVOCATION_PARAMETERS: Final = SpanAttributes.LLM_INVOCATION_PARAMETERS
OI_LLM_TOKEN_COUNT_PROMPT: Final = SpanAttributes.LLM_TOKEN_COUNT_PROMPT
OI_LLM_TOKEN_COUNT_COMPLETION: Final = SpanAttributes.LLM_TOKEN_COUNT_COMPLETION
OI_LLM_TOKEN_COUNT_TOTAL: Final = SpanAttributes.LLM_TOKEN_COUNT_TOTAL
OI_LLM_TOKEN_COUNT_CACHE_READ: Final = SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ
OI_LLM_TOKEN_COUNT_CACHE_WRITE: Final = SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE
OI_LLM_TOKEN_COUNT_REASONING: Final = (
    SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING
)
OI_LLM_COST_TOTAL: Final = SpanAttributes.LLM_COST_TOTAL
OI_LLM_COST_PROMPT: Final = SpanAttributes.LLM_COST_PROMPT
OI_LLM_COST_COMPLETION: Final = SpanAttributes.LLM_COST_COMPLETION
OI_LLM_FINISH_REASON: Final = SpanAttributes.LLM_FINISH_REASON
OI_LLM_INPUT_MESSAGES: Final = SpanAttributes.LLM_INPUT_MESSAGES
OI_LLM_OUTPUT_MESSAGES: Final = SpanAttributes.LLM_OUTPUT_MESSAGES
OI_LLM_PROMPTS: Final = SpanAttributes.LLM_PROMPTS
OI_LLM_PROMPT_TEMPLATE_VARIABLES: Final = SpanAttributes.LLM_PROMPT_TEMPLATE_VARIABLES
OI_EMBEDDING_EMBEDDINGS: Final = SpanAttributes.EMBEDDING_EMBEDDINGS
OI_TOOL_NAME: Final = SpanAttributes.TOOL_NAME
OI_TOOL_ID: Final = SpanAttributes.TOOL_ID
OI_TOOL_PARAMETERS: Final = SpanAttributes.TOOL_PARAMETERS
OI_TOOL_CALL_ID: Final = ToolCallAttributes.TOOL_CALL_ID
OI_TOOL_CALL_FUNCTION_NAME: Final = ToolCallAttributes.TOOL_CALL_FUNCTION_NAME
OI_TOOL_CALL_FUNCTION_ARGUMENTS: Final = ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON
OI_MESSAGE_ROLE: Final = MessageAttributes.MESSAGE_ROLE
OI_MESSAGE_CONTENT: Final = MessageAttributes.MESSAGE_CONTENT
OI_MESSAGE_TOOL_CALLS: Final = MessageAttributes.MESSAGE_TOOL_CALLS
OI_MESSAGE_TOOL_CALL_ID: Final = MessageAttributes.MESSAGE_TOOL_CALL_ID
OI_AGENT_NAME: Final = SpanAttributes.AGENT_NAME
OI_GRAPH_NODE_ID: Final = SpanAttributes.GRAPH_NODE_ID
OI_GRAPH_NODE_NAME: Final = SpanAttributes.GRAPH_NODE_NAME
OI_GRAPH_NODE_PARENT_ID: Final = SpanAttributes.GRAPH_NODE_PARENT_ID
OI_EMBEDDING_MODEL_NAME: Final = SpanAttributes.EMBEDDING_MODEL_NAME
OI_RETRIEVAL_DOCUMENTS: Final = SpanAttributes.RETRIEVAL_DOCUMENTS
OI_DOCUMENT_ID: Final = DocumentAttributes.DOCUMENT_ID
OI_DOCUMENT_SCORE: Final = DocumentAttributes.DOCUMENT_SCORE
OI_DOCUMENT_CONTENT: Final = DocumentAttributes.DOCUMENT_CONTENT
OI_DOCUMENT_METADATA: Final = DocumentAttributes.DOCUMENT_METADATA

# --- spanguard's own (no standard name exists) ------------------------------------
# The run's model/prompt version and feature flags, copied onto every span of the run.
# The keys a LangChain run's ``metadata`` gives them under are META_* below.
MODEL_VERSION: Final = "spanguard.model_version"
PROMPT_VERSION: Final = "spanguard.prompt_version"
FEATURE_FLAG_STATE: Final = "spanguard.feature_flag_state"
META_MODEL_VERSION: Final = "model_version"
META_PROMPT_VERSION: Final = "prompt_version"
META_FEATURE_FLAG_STATE: Final = "feature_flag_state"

TENANT_HASH: Final = "spanguard.tenant.hash"
SESSION_HASH: Final = "spanguard.session.hash"
# A model call's cost in USD (spanguard's price table), on its model span only.
COST_USD: Final = "spanguard.cost.usd"
COST_UNKNOWN: Final = "spanguard.cost.unknown"
# A run's totals, on its root only: backends sum usage over the model spans, so the
# root carries no usage or cost of its own in their vocabularies (gen_ai.usage.* only
# on an invoke_agent root, which the conventions and Langfuse treat as an aggregate).
RUN_TOTAL_INPUT_TOKENS: Final = "spanguard.run.input_tokens"
RUN_TOTAL_OUTPUT_TOKENS: Final = "spanguard.run.output_tokens"
RUN_TOTAL_COST_USD: Final = "spanguard.run.cost_usd"
RUN_COST_UNKNOWN: Final = "spanguard.run.cost_unknown"
RUN_MODEL_CALLS: Final = "spanguard.run.model_calls"
ABANDONED: Final = "spanguard.abandoned"
TOOL_ARGS_HASH: Final = "spanguard.tool.arguments_hash"
TOOL_ACTION_CLASS: Final = "spanguard.tool.action_class"
TOOL_RESULT_STATUS: Final = "spanguard.tool.result_status"
# Set on a request span the MCP proxy closed without an answer from upstream.
MCP_PROXY_OUTCOME: Final = "spanguard.mcp.proxy_outcome"
# On the one span per MCP session under which its setup requests (initialize, tools/list,
# ...) sent without trace context are folded.
MCP_SESSION_SETUP: Final = "spanguard.mcp.session_setup"

GUARDRAIL_NAME: Final = "spanguard.guardrail.name"
GUARDRAIL_DECISION: Final = "spanguard.guardrail.decision"
GUARDRAIL_REASON: Final = "spanguard.guardrail.reason"
GUARDRAIL_LIMIT: Final = "spanguard.guardrail.limit"
GUARDRAIL_SPEND: Final = "spanguard.guardrail.spend"
GUARDRAIL_PREDICTION: Final = "spanguard.guardrail.prediction"
# What calls in flight have reserved against the same limit (reserve -> call -> settle).
GUARDRAIL_RESERVED: Final = "spanguard.guardrail.reserved"
# True on a model span whose usage the provider did not report: the counts are estimates.
USAGE_ESTIMATED: Final = "spanguard.usage.estimated"

# Loop and window budgets: which limit, the fit of t_k = S + u*k + r*R_k, the projection.
BUDGET_METRIC: Final = "spanguard.budget.metric"
BUDGET_STEP: Final = "spanguard.budget.step"
BUDGET_FIT_S: Final = "spanguard.budget.fit.s"
BUDGET_FIT_U: Final = "spanguard.budget.fit.u"
BUDGET_FIT_R: Final = "spanguard.budget.fit.r"
BUDGET_PROJECTED_STEP: Final = "spanguard.budget.projected_step"
BUDGET_PROJECTED_TOTAL: Final = "spanguard.budget.projected_total"
BUDGET_NAME: Final = "spanguard.budget.name"
BUDGET_SCOPE: Final = "spanguard.budget.scope"
BUDGET_WINDOW: Final = "spanguard.budget.window"
TOOL_LOOP_KIND: Final = "spanguard.tool_loop.kind"
TOOL_LOOP_COUNT: Final = "spanguard.tool_loop.count"

# Governance decisions, as attributes of the tool span they concern (every backend
# shows attributes; few show span events): the hold's id and status, what happened to
# it on this call (created, approved, rejected, used, void, expired), who approved or
# rejected it, and the read-back verification's status and reason.
HOLD_ID: Final = "spanguard.hold.id"
HOLD_STATUS: Final = "spanguard.hold.status"
HOLD_DECISION: Final = "spanguard.hold.decision"
HOLD_CHECKER: Final = "spanguard.hold.checker"
VERIFICATION_STATUS: Final = "spanguard.verification.status"
VERIFICATION_REASON: Final = "spanguard.verification.reason"

# Seed 004's routing-decision fields, under spanguard.routing.*.
ROUTING_REQUESTED: Final = "spanguard.routing.requested_route"
ROUTING_SELECTED: Final = "spanguard.routing.selected_route"
ROUTING_REASON: Final = "spanguard.routing.reason"
ROUTING_STATUS: Final = "spanguard.routing.status"
ROUTING_POLICY_VERSION: Final = "spanguard.routing.policy_version"
ROUTING_CAPABILITY_DELTA: Final = "spanguard.routing.capability_delta"
ROUTING_DISCLOSURE_REQUIRED: Final = "spanguard.routing.user_disclosure_required"
ROUTING_QUALITY_FLOOR: Final = "spanguard.routing.quality_floor"
# budget_state is an object in the seed; span attributes are flat, so one key each.
ROUTING_BUDGET_STATE: Final = "spanguard.routing.budget_state"
ROUTING_DETAIL: Final = "spanguard.routing.detail"
ROUTING_ATTEMPTS: Final = "spanguard.routing.attempts"
ROUTING_RETRY_TOKENS: Final = "spanguard.routing.retry_tokens"
ATTEMPT_NUMBER: Final = "spanguard.attempt"
ATTEMPT_ROUTE: Final = "spanguard.attempt.route"
ATTEMPT_IS_RETRY: Final = "spanguard.attempt.is_retry"
# An MCP tool call repeated after a transport failure (upstream crash and restart).
TOOL_RETRY_EVENT: Final = "spanguard.tool.retry"
RETRY_WAIT_SECONDS: Final = "spanguard.retry.wait_seconds"
RETRY_REASON: Final = "spanguard.retry.reason"

RETRIEVAL_QUERY_HASH: Final = "spanguard.retrieval.query_hash"
RETRIEVAL_CANDIDATE_COUNT: Final = "spanguard.retrieval.candidate_count"
RETRIEVAL_DOCUMENT_IDS: Final = "spanguard.retrieval.document_ids"
RETRIEVAL_SCORES: Final = "spanguard.retrieval.scores"
# Seed 004's retrieval model separates the source document from the chunk that
# matched, and asks for a version hash of what was retrieved (no text).
RETRIEVAL_CHUNK_IDS: Final = "spanguard.retrieval.chunk_ids"
RETRIEVAL_CONTENT_HASHES: Final = "spanguard.retrieval.content_hashes"
EMBEDDING_INPUT_COUNT: Final = "spanguard.embedding.inputs"

REDACTION_COUNT: Final = "spanguard.redaction.count"
REDACTION_OUTCOME: Final = "spanguard.redaction.outcome"

# --- guards from seed 004's error taxonomy (issue 22) -----------------------------
# Tool arguments and structured output: the schema's identity and what failed (field
# paths and rules, never values).
TOOL_SCHEMA_HASH: Final = "spanguard.tool.schema.hash"
TOOL_SCHEMA_VERSION: Final = "spanguard.tool.schema.version"
OUTPUT_SCHEMA_HASH: Final = "spanguard.output.schema.hash"
VALIDATION_ERROR_COUNT: Final = "spanguard.validation.error_count"
VALIDATION_SUMMARY: Final = "spanguard.validation.summary"
REPAIR_ATTEMPT: Final = "spanguard.repair.attempt"
REPAIR_MAX_ATTEMPTS: Final = "spanguard.repair.max_attempts"
# Citations: the cited ids that were not retrieved, and the run's inventory (hash).
CITATION_COUNT: Final = "spanguard.citation.count"
CITATION_INVALID_IDS: Final = "spanguard.citation.invalid_ids"
CITATION_INVENTORY_HASH: Final = "spanguard.citation.inventory_hash"
# Tenant scope: what was blocked, as keyed hashes only.
TENANT_SCOPE_BOUNDARY: Final = "spanguard.tenant_scope.boundary"
TENANT_SCOPE_BLOCKED: Final = "spanguard.tenant_scope.blocked"
TENANT_SCOPE_RESOURCE_HASHES: Final = "spanguard.tenant_scope.resource_hashes"
TENANT_SCOPE_FOREIGN_HASHES: Final = "spanguard.tenant_scope.foreign_tenant_hashes"
RETRIEVAL_AUTHORIZED_COUNT: Final = "spanguard.retrieval.authorized_candidate_count"
# Reviewer attention: hold shown -> decision, and the policy's floor.
REVIEW_SECONDS: Final = "spanguard.review.seconds"
REVIEW_FLOOR_SECONDS: Final = "spanguard.review.floor_seconds"
REVIEW_BELOW_FLOOR: Final = "spanguard.review.below_floor"
REVIEW_DECISION: Final = "spanguard.review.decision"

# Captured content (docs/governance.md, "The shape of captured content"): a chat span
# records the input messages new to its call; the leading ones its run recorded
# earlier are its history, referenced by count and by the span that recorded the last.
CONTENT_HISTORY_MESSAGES: Final = "spanguard.content.history.messages"
CONTENT_HISTORY_SPAN_ID: Final = "spanguard.content.history.span_id"
# Flattened OpenInference keys left out to keep the span within its attribute budget.
CONTENT_TRUNCATED: Final = "spanguard.content.truncated"
CONTENT_DROPPED_ATTRIBUTES: Final = "spanguard.content.dropped_attributes"

# --- tail sampling and user outcomes ------------------------------------------
# A user flag: a trace with any span carrying ``spanguard.keep = true`` is always kept.
KEEP: Final = "spanguard.keep"
OUTCOME_ACTION: Final = "spanguard.outcome.action"
OUTCOME_RATING: Final = "spanguard.outcome.rating"
OUTCOME_TARGET_TRACE_ID: Final = "spanguard.outcome.trace_id"

# Langfuse's documented OTel property mapping (``LangfuseOtelSpanAttributes`` in
# packages/shared/src/server/otel/attributes.ts; langfuse is no dependency, so they
# cannot be imported). Only spanguard.langfuse writes them, and only for a Langfuse
# destination (the ``langfuse`` preset, or ``configure(langfuse_attributes=True)``).
LANGFUSE_TRACE_NAME: Final = "langfuse.trace.name"
LANGFUSE_TRACE_TAGS: Final = "langfuse.trace.tags"
LANGFUSE_TRACE_INPUT: Final = "langfuse.trace.input"
LANGFUSE_TRACE_OUTPUT: Final = "langfuse.trace.output"
LANGFUSE_OBSERVATION_LEVEL: Final = "langfuse.observation.level"
LANGFUSE_OBSERVATION_STATUS_MESSAGE: Final = "langfuse.observation.status_message"
LANGFUSE_OBSERVATION_COMPLETION_START_TIME: Final = "langfuse.observation.completion_start_time"
LANGFUSE_OBSERVATION_USAGE_DETAILS: Final = "langfuse.observation.usage_details"
LANGFUSE_OBSERVATION_COST_DETAILS: Final = "langfuse.observation.cost_details"
LANGFUSE_ENVIRONMENT: Final = "langfuse.environment"
LANGFUSE_RELEASE: Final = "langfuse.release"

# --- deprecated 0.x names, written beside their replacement for one release -------
# Each is cheap: on the root only (the run-level fields, copied to every span under the
# new name), or on the few spans that carry it (routing, verification, model cost).
# The retrieval extras (lists, on every retrieval) are renamed without a duplicate.
DEPRECATED_NAMES: Final = {
    MODEL_VERSION: "model_version",
    PROMPT_VERSION: "prompt_version",
    FEATURE_FLAG_STATE: "feature_flag_state",
    VERIFICATION_STATUS: "verification.status",
    ROUTING_REQUESTED: "requested_route",
    ROUTING_SELECTED: "selected_route",
    ROUTING_REASON: "routing_reason",
    ROUTING_STATUS: "route_status",
    ROUTING_POLICY_VERSION: "policy_version",
    ROUTING_CAPABILITY_DELTA: "capability_delta",
    ROUTING_DISCLOSURE_REQUIRED: "user_disclosure_required",
    ROUTING_QUALITY_FLOOR: "quality_floor",
    COST_USD: "gen_ai.usage.cost",  # squatted the gen_ai namespace; Langfuse reads it
}

# --- metrics (seed 002 names where the GenAI conventions have none) -----------
METRIC_TOOL_CALL_COUNT: Final = "agent.tool.call.count"
METRIC_COST_USD: Final = "agent.cost.usd"
METRIC_USER_OUTCOME_COUNT: Final = "agent.user.outcome.count"
METRIC_GUARDRAIL_DECISIONS: Final = "spanguard.guardrail.decisions"
METRIC_HOLDS_PENDING: Final = "spanguard.holds.pending"
METRIC_SPANS_DROPPED: Final = "spanguard.spans.dropped"
METRIC_GUARDRAIL_FINDINGS: Final = "spanguard.guardrail.findings"
METRIC_REVIEW_DURATION: Final = "spanguard.review.duration"
METRIC_ROUTING_DECISIONS: Final = "spanguard.routing.decisions"
METRIC_REDACTION_EVENTS: Final = "spanguard.redaction.events"
# Metric-only attribute keys (low cardinality by construction). The routing labels keep
# their 0.x names, so the operations pack's alert rules and dashboards stay valid.
TOOL_CALL_STATUS: Final = "agent.tool.call.status"
METRIC_LABEL_ROUTE_STATUS: Final = "route_status"
METRIC_LABEL_ROUTING_REASON: Final = "routing_reason"
METRIC_LABEL_DISCLOSURE_REQUIRED: Final = "user_disclosure_required"
# Where lost spans were going: local, otlp, phoenix, langfuse, console, or an exporter class.
EXPORT_DESTINATION: Final = "spanguard.export.destination"
# LangGraph's superstep (the node itself is OpenInference's graph.node.id).
LANGGRAPH_STEP: Final = "langgraph.step"
RUN_INTERRUPTED: Final = "spanguard.run.interrupted"

# --- run lifecycle ------------------------------------------------------------------
# How a run's root ended, one of the four values below: the contract `traces list`,
# `report` and the tail sampler read. A pause (an interrupt waiting for a person) and a
# cancellation (a client gone, an early break, a timeout) are not errors: their spans keep
# status UNSET, and a cancelled step carries ``cancelled`` too.
RUN_STATUS: Final = "spanguard.run.status"
RUN_STATUS_OK: Final = "ok"
RUN_STATUS_ERROR: Final = "error"
RUN_STATUS_PAUSED: Final = "paused"
RUN_STATUS_CANCELLED: Final = "cancelled"
# On the root of a run that continues a paused one (``Command(resume=...)``): it is a child
# of the paused root when spanguard still knew where that one was, and links to it.
RUN_RESUMED: Final = "spanguard.run.resumed"
RUN_PAUSED_SECONDS: Final = "spanguard.run.paused_seconds"
# The person's answer as it reached the run: the decision types of a LangChain
# human-in-the-loop response (approve/edit/reject/respond), else a hash of the value.
RESUME_DECISIONS: Final = "spanguard.resume.decisions"
RESUME_VALUE_HASH: Final = "spanguard.resume.value_hash"
# On a span link: why the two spans are related (``resumes``).
LINK_TYPE: Final = "spanguard.link.type"
LINK_RESUMES: Final = "resumes"
# A resumed root is a child of the run it resumes even when another span (a web
# request's, say) was current; it links to that span instead.
LINK_CALLED_FROM: Final = "called_from"
