"""A run's transcript: each call's history is the longest conversation recorded before it."""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from spanguard.transcript import Recorder, Transcript


class Message:
    """A message object as LangGraph passes it: compared by identity, or by text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Message({self.text!r})"


def same_text(a: Any, b: Any) -> bool:
    return bool(a.text == b.text)


def recorder(span_id: int) -> Recorder:
    made = Recorder()
    made.span_id = span_id
    return made


def test_a_call_extending_the_conversation_records_only_its_new_messages() -> None:
    transcript = Transcript(same_text)
    system, user = Message("be brief"), Message("hi")
    first = recorder(1)
    assert transcript.record_inputs([system, user], first) == (0, None)
    answer = Message("calling a tool")
    transcript.record_output(first, answer)
    result = Message("42")
    second = recorder(2)
    assert transcript.record_inputs([system, user, answer, result], second) == (3, first)
    third = recorder(3)
    assert transcript.record_inputs([system, user, answer, result, Message("more")],
                                    third) == (4, second)


def test_copies_are_matched_by_value_then_by_identity() -> None:
    transcript = Transcript(same_text)
    first = recorder(1)
    transcript.record_inputs([Message("a"), Message("b")], first)
    copies = [Message("a"), Message("b"), Message("c")]
    second = recorder(2)
    assert transcript.record_inputs(copies, second) == (2, first)
    # The copies took the originals' place: a value-equal but edited message now differs.
    third = recorder(3)
    assert transcript.record_inputs([*copies, Message("d")], third) == (3, second)


def test_an_edited_history_forks_and_the_original_conversation_still_matches() -> None:
    transcript = Transcript(same_text)
    a, b, c = Message("a"), Message("b"), Message("c")
    first = recorder(1)
    transcript.record_inputs([a, b, c], first)
    edited = recorder(2)
    assert transcript.record_inputs([a, Message("B!"), c], edited) == (1, first)
    original = recorder(3)
    assert transcript.record_inputs([a, b, c, Message("d")], original) == (3, first)
    again = recorder(4)
    assert transcript.record_inputs([a, Message("B!"), c, Message("e")], again) == (3, edited)


def test_a_repeated_call_records_nothing_and_its_answer_forks_the_conversation() -> None:
    transcript = Transcript(same_text)
    question = Message("q")
    first = recorder(1)
    transcript.record_inputs([question], first)
    transcript.record_output(first, Message("answer one"))
    retry = recorder(2)
    assert transcript.record_inputs([question], retry) == (1, first)
    transcript.record_output(retry, Message("answer two"))
    follow_up = recorder(3)
    assert transcript.record_inputs([question, Message("answer two"), Message("?")],
                                    follow_up) == (2, retry)


def test_threads_beyond_the_limit_are_forgotten_least_recently_used_first() -> None:
    transcript = Transcript(same_text, max_threads=2)
    conversations = [[Message(f"{n}")] for n in range(3)]
    recorders = [recorder(n + 1) for n in range(3)]
    for conversation, made in zip(conversations, recorders, strict=True):
        transcript.record_inputs(conversation, made)
    assert transcript.record_inputs([*conversations[0], Message("x")], recorder(9)) == (0, None)
    assert transcript.record_inputs([*conversations[2], Message("y")],
                                    recorder(10)) == (1, recorders[2])


def test_concurrent_conversations_each_find_their_own_history() -> None:
    transcript = Transcript(same_text)
    system = Message("shared system prompt")
    failures: list[str] = []
    barrier = threading.Barrier(6)

    def converse(worker: int) -> None:
        messages = [system, Message(f"user {worker}")]
        previous: Recorder | None = None
        barrier.wait()
        for step in range(200):
            made = recorder(worker * 1000 + step + 1)
            history, by = transcript.record_inputs(messages, made)
            expected = len(messages) - 1 if previous is not None else 1
            if previous is not None and (history, by) != (expected, previous):
                failures.append(f"worker {worker} step {step}: {history}, {by}")
            elif previous is None and history not in (0, 1):
                failures.append(f"worker {worker} first call: history {history}")
            answer = Message(f"answer {worker}.{step}")
            transcript.record_output(made, answer)
            messages = [*messages, answer, Message(f"tool {worker}.{step}")]
            previous = made

    workers = [threading.Thread(target=converse, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 3), max_size=6),
                          st.none() | st.integers(0, 3)), max_size=12))
def test_history_is_the_longest_prefix_shared_with_anything_recorded_before(
        calls: list[tuple[list[int], int | None]]) -> None:
    transcript = Transcript(lambda a, b: bool(a == b), max_threads=100)
    recorded: list[tuple[list[int], list[Recorder]]] = []  # conversations and their recorders
    for index, (messages, answer) in enumerate(calls):
        made = recorder(index + 1)
        longest, owners = _owners(recorded, messages, made)
        assert transcript.record_inputs(messages, made) == (
            longest, owners[longest - 1] if longest else None)
        if messages:
            recorded.append((list(messages), owners))
            if answer is not None:
                transcript.record_output(made, answer)
                conversation = [*messages, answer]
                recorded.append((conversation, _owners(recorded, conversation, made)[1]))


def _owners(recorded: list[tuple[list[int], list[Recorder]]], messages: list[int],
            made: Recorder) -> tuple[int, list[Recorder]]:
    """The longest prefix ``messages`` shares with a recorded conversation, and who
    records each of its messages: that conversation's recorders, then ``made``."""
    longest, owners = 0, []
    for known, known_owners in recorded:
        length = 0
        for a, b in zip(known, messages, strict=False):
            if a != b:
                break
            length += 1
        if length > longest:
            longest, owners = length, known_owners[:length]
    return longest, [*owners, *[made] * (len(messages) - longest)]
