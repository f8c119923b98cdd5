"""Flag or refuse an answer that cites sources the run never retrieved.

Seed 004's ``invalid_citation`` (citation hallucination): the answer names a
source id that is not among the documents retrieved in the same run. The guard
keeps the run's inventory of retrieved ids (document and chunk ids, from every
retrieval the adapters report, after the tenant-scope guard has dropped what
the run may not see) and reads the cited ids out of each answer with the
policy's format: a regex whose first group (or group ``id``) is the id, or, in
code, a callable ``text -> ids``.

``action = "flag"`` records the finding (a guardrail event with
``error.type=invalid_citation`` on the model call's span, counted in
``spanguard.guardrail.findings``) and lets the answer through; ``"refuse"``
raises :class:`InvalidCitation`, so the answer never reaches the user.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from spanguard import semconv as sc
from spanguard.errors import ConfigError
from spanguard.guardrails import _parse
from spanguard.guardrails.errors import GuardrailViolation
from spanguard.guardrails.guard import Guard
from spanguard.guardrails.steps import Answer, Decision, DecisionKind, Retrieval, RunState
from spanguard.hashing import payload_hash

if TYPE_CHECKING:
    from spanguard.guardrails.policy import Policy
    from spanguard.guardrails.stores import Store

GUARD_NAME = "citations"
ERROR_TYPE = "invalid_citation"
DEFAULT_PATTERN = r"\[source:\s*([^\]\s]+)\s*\]"
CitationAction = Literal["flag", "refuse"]
Extractor = Callable[[str], Iterable[str]]
_STATE_KEY = "spanguard.citations"
_MAX_INVENTORY = 100_000  # ids kept per run; past it the oldest retrievals still count
_MAX_LISTED = 10


@dataclass(frozen=True)
class Citations:
    """``pattern``: a regex finding citations (group ``id``, else group 1, is the id);
    ``extract``: a callable instead (code only); ``action``: flag or refuse."""

    pattern: str = DEFAULT_PATTERN
    action: CitationAction = "flag"
    extract: Extractor | None = None
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = "Citations"
        _parse.text(self.pattern, "pattern", source)
        _parse.choice(self.action, "action", source, ("flag", "refuse"))
        if self.extract is not None and not callable(self.extract):
            raise ConfigError(source, f"extract must be a callable text -> ids, "
                                      f"got {self.extract!r}")
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(source, f"pattern is not a valid regex: {exc}") from exc
        if compiled.groups < 1:
            raise ConfigError(source, "pattern needs a group that captures the id",
                              r'e.g. "\[source:\s*([^\]\s]+)\]" or "(?P<id>...)"')
        object.__setattr__(self, "_compiled", compiled)

    def cited(self, text: str) -> list[str]:
        """The ids cited in ``text``, in order, each once."""
        if self.extract is not None:
            found = [str(i) for i in self.extract(text)]
        else:
            compiled: re.Pattern[str] = self._compiled
            group: int | str = "id" if "id" in compiled.groupindex else 1
            found = [m.group(group) for m in compiled.finditer(text) if m.group(group)]
        return list(dict.fromkeys(found))


def parse_citations(table: Mapping[str, Any], source: str) -> Citations:
    """``[citations]``: pattern (a regex), action (flag | refuse)."""
    _parse.check_keys(table, ("pattern", "action"), source)
    return _parse.in_table(source, Citations, **table)


class InvalidCitation(GuardrailViolation):
    """The answer cites sources that were not retrieved in this run."""

    guard = GUARD_NAME
    error_type = ERROR_TYPE

    def __init__(self, invalid: Sequence[str], cited: int, retrieved: int) -> None:
        self.invalid = tuple(invalid)
        listed = ", ".join(self.invalid[:_MAX_LISTED])
        more = f" and {len(self.invalid) - _MAX_LISTED} more" if len(
            self.invalid) > _MAX_LISTED else ""
        super().__init__(
            f"the answer cites {len(self.invalid)} of its {cited} source(s) that were not "
            f"retrieved in this run ({listed}{more}; {retrieved} retrieved). Cite only "
            "retrieved sources, or retrieve the cited ones first")


class CitationGuard(Guard):
    name = GUARD_NAME

    def __init__(self, config: Citations) -> None:
        self.config = config

    def after_retrieval(self, run: RunState, retrieval: Retrieval) -> Decision | None:
        inventory: set[str] | None = run.scratch.get(_STATE_KEY)
        if inventory is None:
            inventory = run.scratch[_STATE_KEY] = set()
        if len(inventory) >= _MAX_INVENTORY:
            return None
        for document in retrieval.documents:
            if document.id:
                inventory.add(document.id)
            if document.chunk_id:
                inventory.add(document.chunk_id)
        return None

    def check_answer(self, run: RunState, answer: Answer) -> Decision | None:
        cited = self.config.cited(answer.text)
        if not cited:
            return None
        inventory: set[str] = run.scratch.get(_STATE_KEY) or set()
        invalid = [source for source in cited if source not in inventory]
        if not invalid:
            return None
        error = InvalidCitation(invalid, len(cited), len(inventory))
        attributes: dict[str, Any] = {
            sc.CITATION_COUNT: len(cited),
            sc.CITATION_INVALID_IDS: list(invalid[:_MAX_LISTED]),
            sc.CITATION_INVENTORY_HASH: payload_hash(sorted(inventory)),
        }
        kind: DecisionKind = "deny" if self.config.action == "refuse" else "report"
        return Decision(kind, GUARD_NAME, str(error), attributes, error)


def build_citation_guards(policy: Policy, store: Store | None = None) -> Sequence[Guard]:
    config = policy.citations
    return [] if config is None else [CitationGuard(config)]
