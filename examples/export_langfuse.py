"""Export to Langfuse over OpenTelemetry: the LangGraph quickstart's traces, and a score.

    LANGFUSE_HOST=https://cloud.langfuse.com LANGFUSE_PUBLIC_KEY=pk-lf-... \
    LANGFUSE_SECRET_KEY=sk-lf-... python examples/export_langfuse.py

The `langfuse` preset sends OTLP to {host}/api/public/otel/v1/traces with Basic
auth from the key pair. Langfuse maps the spans by its own ingestion rules:
`openinference.span.kind` gives the observation type (LLM -> generation, TOOL ->
tool, AGENT -> agent), `gen_ai.request.model` and `gen_ai.usage.*` the model and
usage (on model calls only: the run's totals are `spanguard.run.*`, which Langfuse
does not add twice), `session.id` / `user.id` (hashed) the session and user. The
preset adds what Langfuse reads only under its own names, to what Langfuse gets:
time to first token of streamed calls, usage and cost in its keys, the trace's name,
input and output (content capture on), tags and environment. The user's feedback
becomes a Langfuse score (`user_outcome`, `user_rating`) through its public API.
docs/backends.md has the whole mapping.
"""

from __future__ import annotations

from langgraph_agent import run

import spanguard


def main() -> None:
    handle = spanguard.configure(preset="langfuse",  # keys from LANGFUSE_* variables
                                 langfuse_tags=["quickstart"])
    print(run(handle))
    # The quickstart's conversation is "demo-thread": a score on its Langfuse session.
    spanguard.record_outcome(conversation_id="demo-thread", action="accepted", rating=5)
    handle.shutdown()  # flushes the spans and the score


if __name__ == "__main__":
    main()
