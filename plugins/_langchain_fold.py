"""Which LangChain chain runs are plumbing, folded into their parent by default.

A person reading an agent trace thinks in nodes, model calls and tool calls.
LangChain also reports the glue between them: prompt templates, output
parsers, ``RunnableSequence``/``RunnableParallel`` wrappers, and, inside
LangGraph, routing functions, channel writers and the hidden ``__start__``
step. The rule, checked in this order:

1. a run LangGraph tags ``langsmith:hidden`` is plumbing;
2. inside a LangGraph graph (``langgraph_node`` in the metadata) only the node
   runs themselves (run name == node name) are kept; everything else a node
   calls that is a chain (routing functions, sequences, a subgraph's own
   wrapper run, whose nodes then nest directly under the calling node) folds;
3. outside LangGraph, LangChain's own composition classes, prompt templates
   and output parsers fold; user-named runnables are kept.

Model, tool and retriever runs are never chains, so they are never folded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HIDDEN_TAG = "langsmith:hidden"

_NAMES = frozenset({
    "RunnableSequence", "RunnableParallel", "RunnableLambda", "RunnablePassthrough",
    "RunnableAssign", "RunnablePick", "RunnableEach", "RunnableBinding", "RunnableBranch",
    "RunnableRetry", "RunnableWithFallbacks", "RunnableGenerator", "RunnableCallable",
    "RunnableSeq", "RouterRunnable", "ChannelWrite", "ChannelRead", "_write", "_route",
    "__start__", "__end__",
})
_PREFIXES = ("RunnableParallel<", "RunnableAssign<", "RunnablePick<", "ChannelWrite<",
             "Branch<")
_SUFFIXES = ("PromptTemplate", "OutputParser", "ToolsParser")


def is_plumbing(name: str, tags: Sequence[str] | None, node: Any) -> bool:
    """``node``: the run's ``langgraph_node`` metadata (None outside LangGraph)."""
    if tags and HIDDEN_TAG in tags:
        return True
    if node is not None:
        return bool(node != name)
    return name in _NAMES or name.startswith(_PREFIXES) or name.endswith(_SUFFIXES)
