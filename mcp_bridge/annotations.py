"""Tool annotations (``readOnlyHint``, ``destructiveHint``, ...) read from ``tools/list``.

Hold rules match on ``destructiveHint``, so a guard deciding on a ``tools/call``
needs the annotations the server advertised for that tool; the tool-arguments
guard needs its ``inputSchema`` (kept as a
:class:`~spanguard.guardrails.tool_arguments.ToolSchema`, rebuilt only when the
listed schema changes, so its compiled validator survives repeated listings). They are learned
from every ``tools/list`` result that passes by, in wire form, so both MCP paths
feed one cache the same way: ``instrument_server`` from the server's own
listing, the stdio proxy from the JSON the upstream sends. Each
:class:`~spanguard.mcp_bridge.gate.ToolGate` keeps one; a listing replaces a
tool's entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spanguard.guardrails.tool_arguments import ToolSchema
from spanguard.hashing import payload_hash

__all__ = ["ToolAnnotations"]


class ToolAnnotations:
    """Tool name -> its advertised annotations, from the latest ``tools/list``."""

    __slots__ = ("_by_tool", "_schemas")

    def __init__(self) -> None:
        self._by_tool: dict[str, Mapping[str, Any]] = {}
        self._schemas: dict[str, ToolSchema] = {}

    def observe(self, result: Mapping[str, Any]) -> None:
        """Learn from a wire ``ListToolsResult`` (camelCase keys, as sent)."""
        tools = result.get("tools")
        if not isinstance(tools, list):
            return
        for tool in tools:
            if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
                continue
            hints = tool.get("annotations")
            self._by_tool[tool["name"]] = dict(hints) if isinstance(hints, Mapping) else {}
            self._observe_schema(tool)

    def _observe_schema(self, tool: Mapping[str, Any]) -> None:
        name = tool["name"]
        schema = tool.get("inputSchema")
        if not isinstance(schema, Mapping):
            self._schemas.pop(name, None)
            return
        meta = tool.get("_meta")
        version = meta.get("version") if isinstance(meta, Mapping) else None
        known = self._schemas.get(name)
        if known is not None and known.digest == payload_hash(schema) \
                and known.version == version:
            return
        self._schemas[name] = ToolSchema(schema, version if isinstance(version, str) else None)

    def schema(self, tool: str) -> ToolSchema | None:
        """The tool's declared input schema; ``None`` when it was never listed."""
        return self._schemas.get(tool)

    def get(self, tool: str) -> Mapping[str, Any] | None:
        """The tool's annotations; ``None`` when it was never listed."""
        return self._by_tool.get(tool)
