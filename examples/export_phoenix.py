"""Export to Arize Phoenix: the LangGraph quickstart's traces over OTLP, and an annotation.

    make phoenix                      # starts Phoenix on 127.0.0.1:6006 and runs the demo
    python examples/export_phoenix.py # or: against a Phoenix you already run

Spans carry OpenInference attributes, so Phoenix shows the agent, LLM, tool and
retriever kinds, token counts and cost with no extra work (its trace totals add up
the LLM spans; the run's own totals are `spanguard.run.*`, not counted again). The
user's feedback becomes a Phoenix annotation (`user_outcome`, HUMAN) on the
conversation's session, through Phoenix's REST API. Point it elsewhere with
PHOENIX_COLLECTOR_ENDPOINT (e.g. http://127.0.0.1:6006). If Phoenix is not running,
the agent still runs: the failed export is reported once, not raised.
"""

from __future__ import annotations

from langgraph_agent import run

import spanguard


def main() -> None:
    handle = spanguard.configure(preset="phoenix")   # + the local store, as always
    print(run(handle))
    spanguard.record_outcome(conversation_id="demo-thread", action="accepted", rating=5)
    handle.shutdown()


if __name__ == "__main__":
    main()
