"""spanguard: one OpenTelemetry span tree per agent run, and the guardrails on it.

Start with :func:`configure`, then add the plugin for your framework
(``spanguard.plugins.langchain``, ``spanguard.plugins.llama_index``) and wrap
your MCP servers (``spanguard.mcp_bridge``). :func:`run_context` tags runs started
outside a framework that carries user/tenant/session ids itself.
"""

from spanguard.config import SpanguardHandle, configure, current
from spanguard.errors import (
    ConfigError,
    OutcomeError,
    SpanguardError,
    StoreError,
    TraceNotFound,
)
from spanguard.exporters.redacting import RedactingExporter
from spanguard.hashing import KeyedHasher, payload_hash
from spanguard.metrics import MetricsSpanProcessor, register_pending_holds
from spanguard.outcomes import record_outcome
from spanguard.pricing import PriceTable
from spanguard.redaction import Redactor
from spanguard.runcontext import RunContext, current_run_context, run_context
from spanguard.sampling import TailSampler

__version__ = "0.1.0"

__all__ = [
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
