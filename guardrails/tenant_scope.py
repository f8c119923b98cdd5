"""Keep another tenant's documents and tool results away from the model.

Seed 004's ``tenant_scope_violation`` (cross-tenant boundary event): a retrieved
document or a tool result whose tenant label differs from the run's tenant. The
label is read from the document's metadata (``metadata_key``, default
``tenant_id``) and from a tool result's ``_meta``, ``structuredContent`` or
artifact under the same key; it is compared as a keyed hash with the run's
tenant (the run never holds the raw id), so a label may be the raw tenant id or
its keyed hash.

* Retrieval: the foreign documents are dropped before the model sees them; the
  rest of the retrieval goes on (:class:`TenantScopeViolation` names the
  dropped ones, ``retrieval.authorized_candidate_count`` says how many remain).
* Tool result: the whole result is withheld (:class:`TenantResultWithheld`);
  the model is told it was withheld, never shown any of it.
* A run with no tenant cannot prove it owns anything labelled: every labelled
  document or result is blocked (fail closed). Unlabelled documents pass,
  unless ``unlabelled = "block"``.

Each block is a guardrail span (hashes only: the run's tenant, the foreign
tenants, the resources), an audit record (``tenant_scope.refused``) and a count
in ``spanguard.guardrail.findings{error.type="tenant_scope_violation"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spanguard import semconv as sc
from spanguard.guardrails import _parse
from spanguard.guardrails.errors import DocumentsWithheld, ResultWithheld
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.steps import Decision, Retrieval, RunState, ToolCall, ToolOutcome
from spanguard.hashing import is_keyed_hash

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy
    from spanguard.guardrails.stores import Store

GUARD_NAME = "tenant_scope"
ERROR_TYPE = "tenant_scope_violation"
Unlabelled = Literal["allow", "block"]
Hasher = Callable[[str], str]
_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class TenantScope:
    """``metadata_key``: where the tenant label is; ``unlabelled``: allow or block
    documents that carry none."""

    metadata_key: str = "tenant_id"
    unlabelled: Unlabelled = "allow"

    def __post_init__(self) -> None:
        source = "TenantScope"
        _parse.text(self.metadata_key, "metadata_key", source)
        _parse.choice(self.unlabelled, "unlabelled", source, ("allow", "block"))


def parse_tenant_scope(table: Mapping[str, Any], source: str) -> TenantScope:
    """``[tenant_scope]``: metadata_key, unlabelled (allow | block)."""
    _parse.check_keys(table, ("metadata_key", "unlabelled"), source)
    return _parse.in_table(source, TenantScope, **table)


class TenantScopeViolation(DocumentsWithheld):
    """Retrieved documents of another tenant (or unlabelled ones, if so configured)."""

    guard = GUARD_NAME
    error_type = ERROR_TYPE

    def __init__(self, blocked: Sequence[int], total: int, run_tenant: str | None) -> None:
        self.blocked = tuple(blocked)
        whose = f"tenant {run_tenant}" if run_tenant else "a run with no tenant"
        super().__init__(f"{len(self.blocked)} of {total} retrieved document(s) are outside "
                         f"the scope of {whose}; they were withheld from the model and the "
                         "rest of the retrieval was kept")


class TenantResultWithheld(ResultWithheld):
    """A tool result labelled with another tenant; none of it reaches the model."""

    guard = GUARD_NAME
    error_type = ERROR_TYPE

    def __init__(self, tool: str, run_tenant: str | None) -> None:
        whose = f"tenant {run_tenant}" if run_tenant else "a run with no tenant"
        super().__init__(f"the result of tool {tool!r} belongs to another tenant than "
                         f"{whose}; it was withheld and nothing of it is shown")


class TenantScopeGuard(Guard):
    name = GUARD_NAME

    def __init__(self, config: TenantScope, hasher: Hasher | None = None) -> None:
        """``hasher``: the keyed hash the run's tenant was made with (default: the one
        :func:`spanguard.configure` set up)."""
        self.config = config
        self._hasher = hasher

    def _hash(self, value: object) -> str:
        text = str(value)
        if is_keyed_hash(text):
            return text
        if self._hasher is None:
            from spanguard import config  # the core's configured key, read at first use

            self._hasher = config.current().hasher
        return self._hasher(text)

    def after_retrieval(self, run: RunState, retrieval: Retrieval) -> Decision | None:
        key = self.config.metadata_key
        block_unlabelled = self.config.unlabelled == "block"
        blocked: list[int] = []
        foreign: set[str] = set()
        for index, document in enumerate(retrieval.documents):
            label = document.metadata.get(key) if document.metadata else None
            if label is None:
                if block_unlabelled:
                    blocked.append(index)
                continue
            hashed = self._hash(label)
            if hashed != run.tenant:
                blocked.append(index)
                foreign.add(hashed)
        if not blocked:
            return None
        total = len(retrieval.documents)
        error = TenantScopeViolation(blocked, total, run.tenant)
        resources = [self._hash(document.id or document.chunk_id or index)
                     for index in blocked[:_MAX_LISTED]
                     for document in (retrieval.documents[index],)]
        attributes = self._attributes(run, "retrieval", foreign, resources)
        attributes[sc.TENANT_SCOPE_BLOCKED] = len(blocked)
        attributes[sc.RETRIEVAL_CANDIDATE_COUNT] = total
        attributes[sc.RETRIEVAL_AUTHORIZED_COUNT] = total - len(blocked)
        return Decision("deny", GUARD_NAME, str(error), attributes, error)

    def after_tool_call(self, run: RunState, call: ToolCall,
                        outcome: ToolOutcome) -> Decision | None:
        label = result_tenant(outcome.result, self.config.metadata_key)
        if label is None:
            return None
        hashed = self._hash(label)
        if hashed == run.tenant:
            return None
        error = TenantResultWithheld(call.tool, run.tenant)
        resource = call.arguments_hash or self._hash(call.tool)
        attributes = self._attributes(run, "tool_result", {hashed}, [resource])
        attributes[sc.TENANT_SCOPE_BLOCKED] = 1
        attributes[sc.GEN_AI_TOOL_NAME] = call.tool
        return Decision("deny", GUARD_NAME, str(error), attributes, error)

    @staticmethod
    def _attributes(run: RunState, boundary: str, foreign: set[str],
                    resources: list[str]) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            sc.TENANT_SCOPE_BOUNDARY: boundary,
            sc.TENANT_SCOPE_FOREIGN_HASHES: sorted(foreign)[:_MAX_LISTED],
            sc.TENANT_SCOPE_RESOURCE_HASHES: resources,
        }
        if run.tenant is not None:
            attributes[sc.TENANT_HASH] = run.tenant
        return attributes


def result_tenant(result: Any, key: str) -> object | None:
    """The tenant label of a tool result: an MCP result's ``_meta`` or
    ``structuredContent``, a mapping's own key, or an object's ``artifact``/``metadata``."""
    if isinstance(result, Mapping):
        for part in (result.get("_meta"), result.get("structuredContent"), result):
            if isinstance(part, Mapping) and part.get(key) is not None:
                found: object = part[key]
                return found
        return None
    for attribute in ("artifact", "metadata", "response_metadata"):
        part = getattr(result, attribute, None)
        if isinstance(part, Mapping) and part.get(key) is not None:
            label: object = part[key]
            return label
    return None


def build_tenant_scope_guards(policy: Policy, store: Store | None = None) -> Sequence[Guard]:
    config = policy.tenant_scope
    return [] if config is None else [TenantScopeGuard(config)]
