"""spanguard: one OpenTelemetry span tree per agent run, and the guardrails on it.

Start with :func:`configure`, then add the plugin for your framework
(``spanguard.plugins.langchain``, ``spanguard.plugins.llama_index``) and wrap
your MCP servers (``spanguard.mcp_bridge``). :func:`run_context` tags runs started
outside a framework that carries user/tenant/session ids itself.

Every process that imports spanguard, and every ``spanguard`` command, pays for
this module, so it imports almost nothing: the public names below are loaded
from their modules on first use (PEP 562), and the OpenTelemetry SDK, SQLite,
TOML and the exporters arrive only with the feature that needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from spanguard.errors import (
    AmbiguousTraceId,
    ConfigError,
    OutcomeError,
    SpanguardError,
    StoreError,
    TraceNotFound,
)

if TYPE_CHECKING:
    from spanguard.config import SpanguardHandle, configure, current
    from spanguard.exporters.redacting import RedactingExporter
    from spanguard.hashing import KeyedHasher, payload_hash
    from spanguard.metrics import MetricsSpanProcessor, register_pending_holds
    from spanguard.outcomes import record_outcome
    from spanguard.pricing import PriceTable
    from spanguard.redaction import Redactor
    from spanguard.runcontext import RunContext, current_run_context, run_context
    from spanguard.sampling import TailSampler

__version__ = "0.1.0"

# Public name -> the module that defines it; keep in step with the imports above.
_LAZY = {
    "SpanguardHandle": "spanguard.config",
    "configure": "spanguard.config",
    "current": "spanguard.config",
    "RedactingExporter": "spanguard.exporters.redacting",
    "KeyedHasher": "spanguard.hashing",
    "payload_hash": "spanguard.hashing",
    "MetricsSpanProcessor": "spanguard.metrics",
    "register_pending_holds": "spanguard.metrics",
    "record_outcome": "spanguard.outcomes",
    "PriceTable": "spanguard.pricing",
    "Redactor": "spanguard.redaction",
    "RunContext": "spanguard.runcontext",
    "current_run_context": "spanguard.runcontext",
    "run_context": "spanguard.runcontext",
    "TailSampler": "spanguard.sampling",
}

__all__ = [
    "AmbiguousTraceId",
    "ConfigError",
    "KeyedHasher",
    "MetricsSpanProcessor",
    "OutcomeError",
    "PriceTable",
    "RedactingExporter",
    "Redactor",
    "RunContext",
    "SpanguardError",
    "SpanguardHandle",
    "StoreError",
    "TailSampler",
    "TraceNotFound",
    "__version__",
    "configure",
    "current",
    "current_run_context",
    "payload_hash",
    "record_outcome",
    "register_pending_holds",
    "run_context",
]


# Hidden from type checkers, which see the real imports above instead: a
# misspelt ``spanguard.confgure`` stays an error for them.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'spanguard' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})
