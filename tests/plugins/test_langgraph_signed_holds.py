"""LangGraph honours signed approvals: resume runs a call only on a reviewer's signature.

An unsigned approval, or a row forged in the store, is refused when the graph is
resumed: the model gets an error ToolMessage saying why, the tool never runs.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from spanguard.guardrails import HoldRules, Policy, approve, get_hold
from spanguard.guardrails.reviewers import Reviewer, Reviewers
from spanguard.guardrails.signing import Signer
from spanguard.plugins.langgraph_holds import HoldGate, HoldMiddleware
from spanguard.testing import SpanCapture
from tests.plugins.test_langgraph_holds import Ledger, ScriptedModel, pay_call, tool_graph

MARIA = Signer.generate()
REVIEWERS = Reviewers([Reviewer("maria", MARIA.public)])
POLICY = Policy(holds=HoldRules(tools=("payments_*",), reviewers=REVIEWERS))


def test_resume_runs_on_a_signed_approval_and_refuses_an_unsigned_one(
        cap: SpanCapture) -> None:
    ledger = Ledger()
    gate = HoldGate(POLICY, identity="alice", tracer_provider=cap.tracer_provider)
    model = ScriptedModel(script=[pay_call("call-1"), AIMessage("done")])
    app = tool_graph(model, [ledger.send], gate)
    unsigned = {"configurable": {"thread_id": "unsigned"}}
    value = app.invoke({"messages": [HumanMessage("pay")]}, unsigned)["__interrupt__"][0].value
    assert value["rule"] == "tools" and "[holds] tools pattern 'payments_*'" in value["reason"]
    approve(value["hold_id"], "carol")  # development-mode approval: no key
    done = app.invoke(Command(resume=True), unsigned)
    refusal = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert refusal.status == "error" and "not signed" in str(refusal.content)
    assert refusal.response_metadata["spanguard"]["hold_status"] == "void"
    assert ledger.sent == []

    signed = {"configurable": {"thread_id": "signed"}}
    app = tool_graph(ScriptedModel(script=[pay_call("call-2"), AIMessage("done")]),
                     [ledger.send], gate)
    held = app.invoke({"messages": [HumanMessage("pay")]}, signed)["__interrupt__"][0].value
    approve(held["hold_id"], "maria", signer=MARIA, reviewers=REVIEWERS)
    app.invoke(Command(resume=True), signed)
    assert ledger.sent == [("bob", 5)]
    assert get_hold(held["hold_id"]).status == "executed"


def test_middleware_refuses_a_forged_row_on_resume(cap: SpanCapture,
                                                   spanguard_home: Path) -> None:
    ledger = Ledger()
    middleware = HoldMiddleware(POLICY, identity="alice", tracer_provider=cap.tracer_provider)
    agent = create_agent(ScriptedModel(script=[pay_call("call-9", "eve", 7),
                                               AIMessage("could not pay")]),
                         [ledger.send], middleware=[middleware], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "forged"}}
    hold_id = agent.invoke({"messages": [HumanMessage("pay eve")]}, config)[
        "__interrupt__"][0].value["hold_id"]
    db = sqlite3.connect(spanguard_home / "guardrails.db")
    (raw,) = db.execute("SELECT record FROM holds WHERE id = ?", (hold_id,)).fetchone()
    forged = {**json.loads(raw), "status": "approved", "checker": "maria",
              "signed_by": MARIA.public, "signature": Signer.generate().sign(b"x")}
    db.execute("UPDATE holds SET status = 'approved', record = ? WHERE id = ?",
               (json.dumps(forged), hold_id))
    db.commit()
    db.close()
    done = agent.invoke(Command(resume=True), config)
    refusal = next(m for m in done["messages"] if isinstance(m, ToolMessage))
    assert "signature does not match" in str(refusal.content)
    assert ledger.sent == [] and get_hold(hold_id).status == "void"
