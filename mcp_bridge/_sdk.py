"""Which MCP SDK major is installed: the parts that use the SDK differ between them.

mcp 2.x propagates trace context from its client and has a server middleware
chain with its own spans; mcp 1.x has neither. The proxy needs no SDK at all.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

from spanguard.extras import missing_extra

__all__ = ["sdk_major", "sdk_mismatch"]


@cache
def sdk_major() -> int | None:
    """The installed ``mcp`` distribution's major version, or None when it is absent."""
    try:
        version = metadata.version("mcp")
    except metadata.PackageNotFoundError:
        return None
    major = version.partition(".")[0]
    return int(major) if major.isdigit() else None


def sdk_mismatch(feature: str, error: ImportError, *, needs: int) -> ImportError:
    """The error for a module written against SDK major ``needs`` that failed to import.

    No SDK: the :class:`~spanguard.extras.MissingExtra` naming ``spanguard[mcp]``.
    Another major: says which is installed and what to use instead.
    """
    major = sdk_major()
    if major is None:
        return missing_extra(feature, error, "mcp")
    if major == needs:
        return error  # a genuine import error of the right SDK: let it speak for itself
    return ImportError(
        f"{feature} is written for mcp {needs}.x and mcp {metadata.version('mcp')} is "
        "installed; use spanguard.mcp_bridge.instrument_server, which supports mcp 1.x "
        "and 2.x", name=error.name)
