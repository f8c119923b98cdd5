"""Export to Langfuse over OpenTelemetry: the LangGraph quickstart's traces.

    LANGFUSE_HOST=https://cloud.langfuse.com LANGFUSE_PUBLIC_KEY=pk-lf-... \
    LANGFUSE_SECRET_KEY=sk-lf-... python examples/export_langfuse.py

The `langfuse` preset sends OTLP to {host}/api/public/otel/v1/traces with Basic
auth from the key pair. Langfuse maps the spans by its documented rules:
`openinference.span.kind` gives the observation type (LLM -> generation, TOOL ->
tool, AGENT -> agent), `gen_ai.request.model` and `gen_ai.usage.*` the model and
usage, `gen_ai.usage.cost` the cost, `session.id` / `user.id` (hashed) the
session and user.
"""

from __future__ import annotations

from langgraph_agent import run

import spanguard


def main() -> None:
    handle = spanguard.configure(preset="langfuse")  # keys from LANGFUSE_* variables
    print(run(handle))
    handle.shutdown()


if __name__ == "__main__":
    main()
