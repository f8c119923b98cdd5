"""The execute_tool span is the active OTel span while the tool body runs, and only then."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from opentelemetry import trace

from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.testing import SpanCapture
from tests.plugins.lc_fakes import ScriptedChatModel, react_graph

INPUT = {"messages": [HumanMessage("go")]}


def _tools(cap: SpanCapture, seen: dict[str, list[int]]) -> list[Any]:
    tracer = cap.tracer_provider.get_tracer("inside-tool")

    @tool
    def sync_probe(a: int, b: int) -> str:
        """Records the span current inside a sync tool and starts a child span."""
        seen.setdefault("sync", []).append(
            trace.get_current_span().get_span_context().span_id)
        with tracer.start_as_current_span("query engine"):
            pass
        return "ok"

    @tool
    async def async_probe(a: int, b: int) -> str:
        """Records the span current inside an async tool and starts a child span."""
        await asyncio.sleep(0)
        seen.setdefault("async", []).append(
            trace.get_current_span().get_span_context().span_id)
        with tracer.start_as_current_span("mcp call"):
            await asyncio.sleep(0)
        return "ok"

    return [sync_probe, async_probe]


def _check(cap: SpanCapture, seen: dict[str, list[int]]) -> None:
    """Every probe saw its own execute_tool span; the spans it started nest under it."""
    root = cap.tree()
    tool_spans = [node for node in root.walk() if node.name.startswith("execute_tool")]
    assert len(tool_spans) == sum(len(ids) for ids in seen.values()) == 2
    ids = {format(span_id, "016x") for values in seen.values() for span_id in values}
    assert ids == {node.span.span_id for node in tool_spans}
    for node in tool_spans:
        assert [child.name for child in node.children] == [
            "query engine" if node.name == "execute_tool sync_probe" else "mcp call"]
    assert not trace.get_current_span().get_span_context().is_valid, "nothing leaks"


@pytest.mark.parametrize("parallel", [1, 2])
def test_tool_span_is_current_inside_sync_tools_invoke(cap: SpanCapture,
                                                       parallel: int) -> None:
    # A sync graph run cannot call an async-only tool (LangChain refuses), so
    # invoke exercises sync tools; ainvoke below exercises both kinds.
    seen: dict[str, list[int]] = {}
    model = ScriptedChatModel(tool_steps=2 // parallel, parallel=parallel,
                              tool_names=["sync_probe"])
    graph = react_graph(model, _tools(cap, seen))
    graph.invoke(INPUT, {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    assert set(seen) == {"sync"}
    _check(cap, seen)


@pytest.mark.parametrize("parallel", [1, 2])
async def test_tool_span_is_current_inside_sync_and_async_tools_ainvoke(
        cap: SpanCapture, parallel: int) -> None:
    seen: dict[str, list[int]] = {}
    model = ScriptedChatModel(tool_steps=2 // parallel, parallel=parallel,
                              tool_names=["sync_probe", "async_probe"])
    graph = react_graph(model, _tools(cap, seen))
    await graph.ainvoke(INPUT, {"callbacks": [SpanguardCallbackHandler(cap.tracer_provider)]})
    assert set(seen) == {"sync", "async"}
    _check(cap, seen)


def test_direct_tool_call_restores_the_callers_context(cap: SpanCapture) -> None:
    seen: dict[str, list[int]] = {}
    sync_probe, async_probe = _tools(cap, seen)
    handler = SpanguardCallbackHandler(cap.tracer_provider)
    tracer = cap.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("caller") as caller:
        sync_probe.invoke({"a": 1, "b": 2}, {"callbacks": [handler]})
        assert trace.get_current_span() is caller
        asyncio.run(async_probe.ainvoke({"a": 1, "b": 2}, {"callbacks": [handler]}))
        assert trace.get_current_span() is caller
    assert not trace.get_current_span().get_span_context().is_valid


def test_failing_tool_restores_the_callers_context(cap: SpanCapture) -> None:
    @tool
    def broken(a: int) -> int:
        """Fails."""
        raise ValueError("bad")

    handler = SpanguardCallbackHandler(cap.tracer_provider)
    with pytest.raises(ValueError):
        broken.invoke({"a": 1}, {"callbacks": [handler]})
    assert not trace.get_current_span().get_span_context().is_valid
    assert cap.tree().span.status == "ERROR"
