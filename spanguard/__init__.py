"""spanguard: one OpenTelemetry span tree per agent run, and the guardrails on it.

Start with :func:`configure`, then add the plugin for your framework
(``spanguard.plugins.langchain``, ``spanguard.plugins.llama_index``) and wrap
your MCP servers (``spanguard.mcp_bridge``).
"""

from spanguard.config import SpanguardHandle, configure, current
from spanguard.errors import ConfigError, SpanguardError, StoreError, TraceNotFound
from spanguard.hashing import KeyedHasher, payload_hash
from spanguard.pricing import PriceTable

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "KeyedHasher",
    "PriceTable",
    "SpanguardError",
    "SpanguardHandle",
    "StoreError",
    "TraceNotFound",
    "__version__",
    "configure",
    "current",
    "payload_hash",
]
