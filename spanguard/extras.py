"""Optional dependencies: which extra brings a module, and the error that says so.

A plugin imported without its framework fails with :class:`MissingExtra`, a
``ModuleNotFoundError`` whose message is the command to run
(``pip install 'spanguard[llama-index]'``), instead of the bare name of a module
the user never asked for (``llama_index_instrumentation``).
"""

from __future__ import annotations

__all__ = ["EXTRA_OF", "MissingExtra", "missing_extra"]

EXTRA_OF: dict[str, str] = {
    "langchain_core": "langgraph",
    "langchain": "langgraph",
    "langgraph": "langgraph",
    "llama_index": "llama-index",
    "llama_index_instrumentation": "llama-index",
    "mcp": "mcp",
    "mcp_types": "mcp",
    "orjson": "mcp",
    "anyio": "mcp",
    "langchain_mcp_adapters": "mcp-adapters",
    "redis": "redis",
    "detect_secrets": "secrets",
    "presidio_analyzer": "ner",
}
"""Top-level module -> the extra that installs it."""


class MissingExtra(ModuleNotFoundError):
    """A part of spanguard was used without the optional dependencies it needs.

    ``extra`` names the extra to install; ``name`` is the module that was missing.
    """

    def __init__(self, feature: str, extra: str, missing: str | None) -> None:
        what = f" ({missing} is not installed)" if missing else ""
        super().__init__(f"{feature} needs the '{extra}' extra{what}: "
                         f"pip install 'spanguard[{extra}]'", name=missing)
        self.feature = feature
        self.extra = extra


def missing_extra(feature: str, error: ImportError, extra: str | None = None) -> MissingExtra:
    """The :class:`MissingExtra` for ``error``, raised ``from`` it by the caller.

    ``extra`` defaults to the one that installs the missing module (``all`` for a
    module no extra names).
    """
    if isinstance(error, MissingExtra):
        return MissingExtra(feature, error.extra, error.name)
    top = (error.name or "").partition(".")[0]
    return MissingExtra(feature, extra or EXTRA_OF.get(top, "all"), error.name)
