"""Each captured message is redacted once per run, on the exporter's thread."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanguard import semconv as sc
from spanguard.exporters.redacting import RedactingExporter
from spanguard.hashing import canonical_json
from spanguard.plugins.langchain import SpanguardCallbackHandler
from spanguard.redaction import Redactor
from spanguard.redaction.memo import RedactionMemo
from spanguard.redaction.messages import redact_messages_json
from tests.plugins.lc_fakes import ScriptedChatModel, add, react_graph

EMAIL = "jane.roe@example.com"
PHONE = "+1 415 555 0100"
CARD = "4111 1111 1111 1111"


class ScanLog(Redactor):
    """A redactor that notes every text it scans, and on which thread."""

    def __init__(self) -> None:
        super().__init__()
        self.scanned: Counter[str] = Counter()
        self.threads: set[int] = set()
        self._log_lock = threading.Lock()

    def redact(self, text: str) -> tuple[str, int]:
        with self._log_lock:
            self.scanned[text] += 1
            self.threads.add(threading.get_ident())
        return super().redact(text)


def test_a_message_is_redacted_once_per_run_on_the_exporter_thread() -> None:
    redactor = ScanLog()
    sink = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(RedactingExporter(sink, redactor)))
    handler = SpanguardCallbackHandler(provider, capture_content=True)
    agent_threads: set[int] = set()

    def agent() -> None:
        agent_threads.add(threading.get_ident())
        react_graph(ScriptedChatModel(tool_steps=8), [add]).invoke(
            {"messages": [HumanMessage(f"mail {EMAIL} the totals")]}, {"callbacks": [handler]})

    with ThreadPoolExecutor(1) as pool:
        pool.submit(agent).result()
    provider.force_flush()
    assert redactor.scanned, "capture on: content was redacted"
    assert {text: n for text, n in redactor.scanned.items() if n > 1} == {}
    assert not agent_threads & redactor.threads  # never on the agent's thread
    exported = json.dumps([dict(span.attributes or {}) for span in sink.get_finished_spans()])
    assert EMAIL not in exported and "[REDACTED:email]" in exported
    provider.shutdown()


def test_genai_messages_are_redacted_piece_by_piece_with_their_key_names() -> None:
    document = canonical_json([
        {"role": "user", "parts": [{"type": "text", "content": f"I am {EMAIL}"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "login",
                                         "arguments": {"password": "hunter2hunter2",
                                                       "card": CARD}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1",
                                    "response": f"call {PHONE}"}]},
    ])
    redactor = Redactor()
    result = redact_messages_json(document, redactor.redact_cached)
    assert result is not None
    text, count = result
    messages = json.loads(text)
    assert messages[0]["parts"][0]["content"] == "I am [REDACTED:email]"
    assert messages[1]["parts"][0]["arguments"] == {"password": "[REDACTED:credential]",
                                                    "card": "[REDACTED:payment_card]"}
    assert messages[2]["parts"][0]["response"] == "call [REDACTED:phone]"
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert count == 4
    # The flattened key of the same text, redacted earlier, is reused: no second scan.
    hits = redactor.memo.hits
    redactor.redact_cached(f"I am {EMAIL}")
    assert redactor.memo.hits == hits + 1


def test_an_unchanged_document_comes_back_as_the_same_string() -> None:
    document = '[{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]'
    assert redact_messages_json(document, Redactor().redact_cached) == (document, 0)


def test_text_that_is_not_a_message_list_is_redacted_as_plain_text() -> None:
    redactor = Redactor()
    for value in (f'["{EMAIL}"]', f"[not json {EMAIL}", f'{{"to": "{EMAIL}"}}'):
        assert redact_messages_json(value, redactor.redact_cached) is None
        redacted, _ = redactor.redact_attributes({sc.GEN_AI_INPUT_MESSAGES: value}) or ({}, 0)
        assert EMAIL not in redacted[sc.GEN_AI_INPUT_MESSAGES]


def test_a_number_redacted_inside_arguments_keeps_the_document_valid_json() -> None:
    document = canonical_json([{"role": "assistant", "parts": [
        {"type": "tool_call", "id": "c", "name": "pay", "arguments": {"card": 4111111111111111}}]}])
    text, count = redact_messages_json(document, Redactor().redact_cached) or ("", 0)
    arguments = json.loads(text)[0]["parts"][0]["arguments"]
    assert count == 1
    assert arguments == '{"card":[REDACTED:payment_card]}'  # kept as redacted text


def test_the_memo_is_bounded_and_forgets_the_least_recently_used() -> None:
    memo = RedactionMemo(max_chars=60)  # an entry counts its result plus a 16-byte digest
    memo.put("aaaaaaaaaa", ("aaaaaaaaaa", 0))  # 26
    memo.put("bbbbbbbbbb", ("bbbbbbbbbb", 0))  # 52
    assert memo.get("aaaaaaaaaa") is not None  # a is now the most recent
    memo.put("cccccccccc", ("cccccccccc", 0))  # 78 > 60: b goes
    assert memo.get("bbbbbbbbbb") is None
    assert memo.get("aaaaaaaaaa") is not None and memo.get("cccccccccc") is not None
    memo.put("x", ("y" * 50, 0))  # larger than the whole memo: not kept
    assert memo.get("x") is None and len(memo) == 2


def test_the_memo_keeps_no_original_content() -> None:
    redactor = Redactor()
    secret_text = f"reach me at {EMAIL} or {PHONE}"
    assert redactor.redact_cached(secret_text)[1] == 2
    assert redactor.redact_cached(secret_text)[1] == 2 and redactor.memo.hits == 1
    held = repr(list(redactor.memo._entries.items()))
    assert EMAIL not in held and PHONE not in held and "reach me at" in held


def test_threads_sharing_the_memo_get_what_a_fresh_redaction_gives() -> None:
    redactor = Redactor()
    redactor.memo = RedactionMemo(max_chars=2_000)  # small: eviction races lookups
    texts = [f"row {n}: {EMAIL if n % 3 == 0 else 'nobody'} {PHONE if n % 5 == 0 else ''}"
             for n in range(200)]
    expected = {text: Redactor().redact(text) for text in texts}

    def work(seed: int) -> list[str]:
        order = random.Random(seed).choices(texts, k=2_000)
        return [text for text in order if redactor.redact_cached(text) != expected[text]]

    with ThreadPoolExecutor(8) as pool:
        wrong = [text for found in pool.map(work, range(8)) for text in found]
    assert wrong == []
    assert redactor.memo.hits > 0


_PII = st.sampled_from([EMAIL, PHONE, CARD, "sk-ant-api03-" + "x1Y2" * 10])
_WORDS = st.text(alphabet="abc xyz\n\"\\{}[]:,", max_size=20)
_TEXT = st.builds(lambda a, pii, b: f"{a} {pii} {b}", _WORDS, _PII, _WORDS)
_PART = st.one_of(
    st.builds(lambda t: {"type": "text", "content": t}, _TEXT),
    st.builds(lambda t: {"type": "tool_call_response", "id": "c", "response": t}, _TEXT),
    st.builds(lambda t: {"type": "tool_call", "id": "c", "name": "f", "arguments": {"q": t}},
              _TEXT),
)
_MESSAGE = st.builds(lambda role, parts: {"role": role, "parts": parts},
                     st.sampled_from(["user", "assistant", "tool", "system"]),
                     st.lists(_PART, min_size=1, max_size=3))


@settings(max_examples=150, deadline=None)
@given(st.lists(_MESSAGE, min_size=1, max_size=4))
def test_no_planted_personal_data_survives_piecewise_redaction(
        messages: list[dict[str, Any]]) -> None:
    document = canonical_json(messages)
    text, count = redact_messages_json(document, Redactor().redact_cached) or ("", 0)
    for secret in (EMAIL, PHONE, CARD, "sk-ant-api03-"):
        assert secret not in text
    redacted = json.loads(text)
    assert [m["role"] for m in redacted] == [m["role"] for m in messages]
    assert [[p["type"] for p in m["parts"]] for m in redacted] == [
        [p["type"] for p in m["parts"]] for m in messages]
    assert count >= sum(len(m["parts"]) for m in messages)
