"""The spanguard demo: a support agent's day, offline, told by its span trees.

    make demo            # or: python examples/demo.py

Run 1, one trace. A LangGraph support agent (a scripted fake chat model that
streams its replies: no network, no key) answers a customer from a LlamaIndex
knowledge base (a query engine whose deterministic LLM writes the passage), writes the
answer into the team's FAQ and commits it through a real MCP server
(``mcp-server-git`` on a temporary repository) wrapped by ``spanguard mcp wrap``.
The policy holds ``git_commit`` until a different person approves that exact
payload: the reviewer, whose key (``spanguard reviewer init``) the policy lists,
approves it with the CLI (``spanguard holds approve``, which signs the approval),
the proxy checks the signature, the commit runs once, and the proxy verifies it
by reading ``git_log`` back. ``spanguard audit verify --policy`` then proves the
story from the audit log against the reviewer's key.

Run 2. The same agent gets stuck re-searching the knowledge base, re-sending a
growing history each turn. The loop budget fits the quadratic token curve and
refuses the next model call *before* the provider is invoked.

Both trees are printed from the local store, with the holds, the audit chain and
the commands to explore further.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import BaseTool, tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from llama_index.core import Document, MockEmbedding, VectorStoreIndex
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import spanguard
from spanguard.cli.shell import spanguard_command
from spanguard.guardrails import LoopBudget, LoopBudgetExceeded, Policy, list_holds
from spanguard.plugins import llama_index as sg_llama
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.store import TraceStore
from spanguard.tree import build_forest, render

MODEL = "gpt-4o-mini"
AGENT = "support_agent"
REVIEWER = "maria"
COMMIT_MESSAGE = "docs: answer the annual-plan refund question in the FAQ"

KNOWLEDGE = {
    "refunds": "Annual plans can be refunded in full within 30 days of purchase; "
               "after that, the unused months are credited to the account.",
    "shipping": "Hardware ships within 2 business days from the Lisbon warehouse.",
    "security": "Support staff never ask for passwords or one-time codes.",
    "invoices": "Invoices are issued on the first day of each billing period.",
}

PROXY_POLICY = """\
# The MCP proxy's policy: a commit needs a second person's signed approval, and is
# checked after.
[holds]
tools = ["git_commit"]
expires_after = "10m"

[verify.git_commit]
call = "git_log"
arguments = { repo_path = "{repo_path}" }
expect_contains = "{message}"
"""


class ScriptedChatModel(BaseChatModel):
    """Plays back a list of replies; usage grows with the history, as real agents' does.

    With ``streaming=True`` a reply arrives in chunks, the usage and the finish reason
    in the last one, as OpenAI's streaming API sends them.
    """

    replies: list[AIMessage]
    model_name: str = MODEL
    tokens_per_message: int = 180
    system_tokens: int = 600
    streaming: bool = False

    @property
    def _llm_type(self) -> str:
        return "scripted-demo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        turn = sum(isinstance(m, AIMessage) for m in messages)
        reply = self.replies[min(turn, len(self.replies) - 1)].model_copy(deep=True)
        input_tokens = self.system_tokens + self.tokens_per_message * len(messages)
        reply.usage_metadata = {"input_tokens": input_tokens, "output_tokens": 40,
                                "total_tokens": input_tokens + 40}
        reply.response_metadata = {"model_name": self.model_name,
                                   "finish_reason": "tool_calls" if reply.tool_calls else "stop"}
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: Any = None, **kwargs: Any) -> Any:
        reply = self._generate(messages, stop, **kwargs).generations[0].message
        assert isinstance(reply, AIMessage)
        text = str(reply.content)
        pieces = [text[i:i + 16] for i in range(0, len(text), 16)] or [""]
        for piece in pieces[:-1]:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(message=AIMessageChunk(
            content=pieces[-1], usage_metadata=reply.usage_metadata,
            response_metadata=reply.response_metadata,
            tool_call_chunks=[{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"],
                               "index": i} for i, c in enumerate(reply.tool_calls)]))


class PassageWriter(CustomLLM):
    """The knowledge base's LLM: writes the answer passage from the retrieved context,
    deterministically, and reports its usage the way OpenAI's API does."""

    model_name: str = MODEL

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model_name)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        context = prompt.split("---------------------")[1] if "-----" in prompt else prompt
        passage = next((line.strip() for line in context.splitlines() if line.strip()
                        and ":" not in line), "No passage found.")
        usage = {"prompt_tokens": 4 * len(prompt.split()), "completion_tokens": 24}
        return CompletionResponse(text=passage, raw={
            "model": self.model_name, "usage": usage, "choices": [{"finish_reason": "stop"}]})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt, formatted, **kwargs)


def call(name: str, **args: Any) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{name}"}])


def build_graph(model: BaseChatModel, tools: list[BaseTool]) -> Any:
    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(name=AGENT)


def knowledge_base() -> Any:
    documents = [Document(text=text, id_=f"kb-{key}", metadata={"source": f"kb/{key}.md"})
                 for key, text in KNOWLEDGE.items()]
    index = VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))
    index.set_index_id("support_kb")
    return index


def make_repository(root: Path) -> Path:
    repo = root / "faq-repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.name", "Support Bot"],
                 ["config", "user.email", "bot@example.invalid"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / "FAQ.md").write_text("# FAQ\n")
    subprocess.run(["git", "add", "FAQ.md"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "FAQ skeleton"], cwd=repo, check=True)
    return repo


def reviewer_key(key_dir: Path) -> str:
    """The reviewer's key pair (``spanguard reviewer init``); returns the public key.

    The demo keeps it in its scratch directory; a real reviewer's lives in their own
    ``~/.config/spanguard/reviewers``, away from the agent's user and machine.
    """
    created = subprocess.run([sys.executable, "-m", "spanguard", "reviewer", "init", "--as",
                              REVIEWER, "--dir", str(key_dir)],
                             check=True, capture_output=True, text=True).stdout
    return next(line.split(": ", 1)[1] for line in created.splitlines()
                if line.startswith("public key: "))


def reviewer(stop: threading.Event, command: str, key_dir: Path, policy_file: Path) -> None:
    """A second person: approves the pending commit from another terminal (the CLI),
    signing it with their key."""
    while not stop.wait(0.2):
        for hold in list_holds():
            if hold.status == "pending":
                print(f"\n  reviewer {REVIEWER!r} runs: {command} holds approve {hold.id} "
                      f"--as {REVIEWER}   (signed with {REVIEWER}'s key)")
                subprocess.run([sys.executable, "-m", "spanguard", "holds", "approve", hold.id,
                                "--as", REVIEWER, "--key", str(key_dir / f"{REVIEWER}.key"),
                                "--policy", str(policy_file), "--reason",
                                "FAQ wording checked"],
                               check=True, stdout=subprocess.DEVNULL)
                return


async def run_support_story(handler: SpanguardCallbackHandler, index: Any, repo: Path,
                            policy_file: Path, key_dir: Path, command: str) -> str:
    proxy = StdioServerParameters(
        command=sys.executable,
        args=["-m", "spanguard", "mcp", "wrap", "--policy", str(policy_file),
              "--identity", AGENT, "--hold-wait", "60", "--",
              sys.executable, "-m", "mcp_server_git", "--repository", str(repo)],
        env=dict(os.environ))
    async with stdio_client(proxy) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def git(tool_name: str, **args: Any) -> str:
            result = await session.call_tool(tool_name, {"repo_path": str(repo), **args})
            text = "\n".join(getattr(block, "text", "") for block in result.content)
            return ("ERROR: " if result.is_error else "") + text

        answers = index.as_query_engine(llm=PassageWriter(), similarity_top_k=2)

        @tool
        def search_kb(query: str) -> str:
            """Search the support knowledge base."""
            return str(answers.query(query))

        @tool
        def write_faq(entry: str) -> str:
            """Append an entry to the team FAQ."""
            with (repo / "FAQ.md").open("a") as faq:
                faq.write(f"\n{entry}\n")
            return "FAQ.md updated"

        @tool
        async def git_add(files: list[str]) -> str:
            """Stage files in the FAQ repository."""
            return await git("git_add", files=files)

        @tool
        async def git_commit(message: str) -> str:
            """Commit the staged changes (held for a second person's approval)."""
            return await git("git_commit", message=message)

        answer = ("Annual plans are refundable in full within 30 days; I added this to "
                  "the FAQ (commit approved by a reviewer and verified).")
        model = ScriptedChatModel(streaming=True, replies=[
            call("search_kb", query="refund for an annual plan"),
            call("write_faq", entry="**Refunds (annual plans):** full refund within 30 days."),
            call("git_add", files=["FAQ.md"]),
            call("git_commit", message=COMMIT_MESSAGE),
            AIMessage(content=answer),
        ])
        graph = build_graph(model, [search_kb, write_faq, git_add, git_commit])
        stop = threading.Event()
        approver = threading.Thread(target=reviewer, args=(stop, command, key_dir, policy_file),
                                    daemon=True)
        approver.start()
        try:
            result = await graph.ainvoke(
                {"messages": [("user", "Can I get a refund on my annual plan?")]},
                config={"callbacks": [handler],
                        "configurable": {"thread_id": "ticket-4711"},
                        "metadata": {"user_id": "customer-829", "tenant_id": "acme",
                                     "prompt_version": "support-v7"}})
        finally:
            stop.set()
            approver.join(timeout=5)
        return str(result["messages"][-1].content)


def run_runaway(handler_factory: Any, index: Any) -> LoopBudgetExceeded | None:
    retriever = index.as_retriever(similarity_top_k=2)

    @tool
    def search_kb(query: str) -> str:
        """Search the support knowledge base."""
        return "\n".join(node.get_content() for node in retriever.retrieve(query))

    stuck = ScriptedChatModel(replies=[call("search_kb", query="refund, again")],
                              tokens_per_message=400)
    graph = build_graph(stuck, [search_kb])
    handler = handler_factory(Policy(loop_budget=LoopBudget(max_input_tokens=20_000,
                                                            max_model_calls=40)))
    try:
        graph.invoke({"messages": [("user", "Is the refund policy different on Sundays?")]},
                     config={"callbacks": [handler], "recursion_limit": 200,
                             "configurable": {"thread_id": "ticket-4712"}})
    except LoopBudgetExceeded as refusal:
        return refusal
    return None


def trace_started_after(store: TraceStore, root_name: str, since_ns: int) -> str:
    """The first trace with that root that started after ``since_ns``."""
    matches = [s for s in store.traces(limit=100)
               if s.root_name == root_name and s.start_time >= since_ns]
    return min(matches, key=lambda s: s.start_time).trace_id


def main() -> int:
    os.environ.setdefault("SPANGUARD_HOME", str(Path.cwd() / ".spanguard"))
    home = Path(os.environ["SPANGUARD_HOME"])
    command = spanguard_command(home)  # what works when pasted into a new shell
    handle = spanguard.configure(service_name="support-agent")
    sg_llama.instrument(tracer_provider=handle.tracer_provider)
    index = knowledge_base()

    def handler_for(policy: Policy | None = None) -> SpanguardCallbackHandler:
        return SpanguardCallbackHandler(tracer_provider=handle.tracer_provider, policy=policy,
                                        identity=AGENT)

    with tempfile.TemporaryDirectory(prefix="spanguard-demo-") as scratch:
        repo = make_repository(Path(scratch))
        key_dir = Path(scratch) / "reviewer-keys"
        policy_file = Path(scratch) / "proxy-policy.toml"
        policy_file.write_text(PROXY_POLICY + f'\n[holds.reviewers.{REVIEWER}]\n'
                                              f'key = "{reviewer_key(key_dir)}"\n')
        print("Run 1: the support agent answers, updates the FAQ, and commits through MCP")
        run_starts = [time.time_ns()]
        started = time.monotonic()
        answer = asyncio.run(run_support_story(handler_for(), index, repo, policy_file,
                                                key_dir, command))
        print(f"\n  agent: {answer}  ({time.monotonic() - started:.1f}s)")
        log = subprocess.run(["git", "log", "--oneline", "-1"], cwd=repo, check=True,
                             capture_output=True, text=True).stdout.strip()
        print(f"  git log -1: {log}")
        audit = subprocess.run([sys.executable, "-m", "spanguard", "audit", "verify",
                                "--policy", str(policy_file), "--json"],
                               capture_output=True, text=True, check=False)

    print("\nRun 2: the agent loops; the loop budget stops it before the provider is called")
    run_starts.append(time.time_ns())
    refusal = run_runaway(handler_for, index)
    print(f"\n  {type(refusal).__name__}: {refusal}" if refusal else "\n  (not stopped)")
    sg_llama.uninstrument()
    handle.force_flush()

    store = TraceStore.in_home(home)
    trace_ids = [trace_started_after(store, f"invoke_agent {AGENT}", since)
                 for since in run_starts]
    for title, trace_id in zip(("Run 1", "Run 2"), trace_ids, strict=True):
        print(f"\n{title} span tree ({command} traces show {trace_id[:12]}):\n")
        print(render(build_forest(store.trace(trace_id))))

    print("\nHolds:")
    for hold in list_holds():
        signed = "signed" if hold.signed_by else "unsigned"
        print(f"  {hold.id}  {hold.tool}  maker={hold.maker}  checker={hold.checker} "
              f"({signed})  status={hold.status}")
    proof = json.loads(audit.stdout) if audit.stdout else {"ok": audit.stderr}
    print(f"\nAudit log proven against the reviewer's key: {proof.get('ok')}"
          f"  (head {proof.get('anchor')})")
    handle.shutdown()
    hints = [
        (f"{command} traces list", f"every trace in {home}"),
        (f"{command} traces show {trace_ids[0][:12]}", "one tree (add --json for scripts)"),
        (f"{command} holds list", "pending and decided holds"),
        (f"{command} audit verify", "check the audit log: its chain and every approval"),
        (f"{command} report --by model", "runs, errors, latency, tokens and cost"),
        ("make phoenix", "the same traces in a local Arize Phoenix"),
    ]
    width = max(len(hint) for hint, _ in hints)
    print(f"\nNext, from {Path.cwd()}:")
    for hint, meaning in hints:
        print(f"  {hint:<{width}}  {meaning}")
    return 0 if refusal is not None else 1


if __name__ == "__main__":
    sys.exit(main())
