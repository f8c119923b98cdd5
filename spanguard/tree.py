"""Span trees built from flat span lists, and their terminal rendering.

One implementation serves the CLI (``spanguard traces show``), the console
exporter and :mod:`spanguard.testing`, so what a test asserts is what a user sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from spanguard import semconv as sc
from spanguard.store import StoredSpan


@dataclass
class SpanNode:
    span: StoredSpan
    children: list[SpanNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return self.span.attributes

    @property
    def kind(self) -> str | None:
        value = self.span.attributes.get(sc.OPENINFERENCE_SPAN_KIND)
        return str(value) if value is not None else None

    def walk(self) -> Iterator[SpanNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, name: str) -> SpanNode:
        """First node (depth first) whose name equals ``name`` or starts with it."""
        for node in self.walk():
            if node.name == name:
                return node
        for node in self.walk():
            if node.name.startswith(name):
                return node
        raise KeyError(f"no span named {name!r} under {self.name!r}; have "
                       f"{[n.name for n in self.walk()]}")

    def find_all(self, name: str) -> list[SpanNode]:
        return [node for node in self.walk() if node.name == name or node.name.startswith(name)]

    def shape(self) -> tuple[str, list[Any]]:
        """(name, [child shapes]) for whole-tree equality assertions."""
        return (self.name, [child.shape() for child in self.children])


def build_forest(spans: Sequence[StoredSpan]) -> list[SpanNode]:
    """Roots of every trace in ``spans``; a span whose parent is absent is a root."""
    nodes = {(s.trace_id, s.span_id): SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent_id = node.span.parent_span_id
        parent = nodes.get((node.span.trace_id, parent_id)) if parent_id else None
        if parent is None:
            roots.append(node)
        else:
            parent.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.span.start_time, n.span.span_id))
    roots.sort(key=lambda n: (n.span.start_time, n.span.span_id))
    return roots


def render(roots: Sequence[SpanNode]) -> str:
    lines: list[str] = []
    for root in roots:
        _render(root, "", True, lines, top=True)
    return "\n".join(lines)


def _render(node: SpanNode, prefix: str, last: bool, lines: list[str], top: bool = False) -> None:
    connector = "" if top else ("└─ " if last else "├─ ")
    lines.append(prefix + connector + _describe(node.span))
    child_prefix = prefix if top else prefix + ("   " if last else "│  ")
    for index, child in enumerate(node.children):
        _render(child, child_prefix, index == len(node.children) - 1, lines)


def _describe(span: StoredSpan) -> str:
    attrs = span.attributes
    parts = [span.name]
    kind = attrs.get(sc.OPENINFERENCE_SPAN_KIND)
    if kind:
        parts.append(f"[{kind}]")
    duration = span.duration_ms
    parts.append(f"{duration:.1f}ms" if duration is not None else "open")
    if span.status == "ERROR":
        parts.append(f"ERROR({attrs.get(sc.ERROR_TYPE, span.status_message or '')})")
    if attrs.get(sc.RUN_RESUMED) is True:
        parts.append("resumed")
    status = attrs.get(sc.RUN_STATUS)
    if status in (sc.RUN_STATUS_PAUSED, sc.RUN_STATUS_CANCELLED):
        parts.append(str(status))
    tokens_in = attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS, attrs.get(sc.RUN_TOTAL_INPUT_TOKENS))
    tokens_out = attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, attrs.get(sc.RUN_TOTAL_OUTPUT_TOKENS))
    if tokens_in is not None or tokens_out is not None:
        parts.append(f"tokens {tokens_in or 0}→{tokens_out or 0}")
    cost = attrs.get(sc.COST_USD, attrs.get(sc.RUN_TOTAL_COST_USD))
    if cost is not None:
        parts.append(f"${cost:.6f}")
    elif attrs.get(sc.COST_UNKNOWN) or attrs.get(sc.RUN_COST_UNKNOWN):
        parts.append("$unknown")
    decision = attrs.get(sc.GUARDRAIL_DECISION)
    if decision:
        parts.append(f"decision={decision}")
    verification = attrs.get(sc.VERIFICATION_STATUS)
    if verification:
        parts.append(f"verification={verification}")
    return " ".join(parts)
