"""``spanguard report`` counts the taxonomy guards' findings by ``error.type``.

Real runs through the LangChain handler (a retriever with another tenant's
document, answers citing unretrieved sources, flagged not refused), then the
report over the captured spans: the runs did not fail, yet each finding is
counted once, by its type, in the JSON and in the table.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda

from spanguard.cli.report import _row
from spanguard.guardrails import Policy
from spanguard.guardrails.citations import Citations
from spanguard.guardrails.tenant_scope import TenantScope
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.report import build_report
from spanguard.testing import SpanCapture
from tests.plugins.test_langchain_taxonomy import ScriptedModel


class Shelf(BaseRetriever):
    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document("ours", id="a1", metadata={"tenant_id": "acme"}),
                Document("theirs", id="g1", metadata={"tenant_id": "globex"})]


def test_findings_are_counted_by_error_type_without_failing_the_runs(cap: SpanCapture) -> None:
    policy = Policy(tenant_scope=TenantScope(), citations=Citations(action="flag"))
    handler = SpanguardCallbackHandler(cap.tracer_provider, policy=policy, agent_name="rag")
    shelf = Shelf()

    def answer(question: str) -> Any:
        shelf.invoke(question)
        return ScriptedModel(script=[AIMessage("x [source: g1] [source: zz]")]).invoke(
            [HumanMessage(question)])

    for _ in range(2):
        RunnableLambda(answer, name="rag").invoke(
            "q", {"callbacks": [handler], "metadata": {"tenant_id": "acme"}})

    [group] = build_report(cap.spans(), "agent")
    data = group.to_json("agent")
    assert data["runs"] == 2 and data["errors"] == 0
    assert data["findings_by_type"] == {"invalid_citation": 2, "tenant_scope_violation": 2}
    assert _row(group).endswith("|  invalid_citation 2, tenant_scope_violation 2")
