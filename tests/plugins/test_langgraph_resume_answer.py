"""What a resumed run records about the person's answer: decision types or a keyed hash,
never the answer's text, whatever the answer is."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from langgraph.types import Command

from spanguard import semconv as sc
from spanguard.hashing import KeyedHasher
from spanguard.plugins._langgraph_resume import DECISION_TYPES, answer_attributes, continues

HASH = KeyedHasher(b"answer-key-16bytes")
SECRET = "SSN 078-05-1120"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20)


@given(json_values)
def test_any_answer_gives_decisions_or_a_hash_and_never_raises(value: Any) -> None:
    attrs = answer_attributes(Command(resume=value), HASH)
    if value is None:
        assert attrs == {}
        return
    assert set(attrs) in ({sc.RESUME_DECISIONS}, {sc.RESUME_VALUE_HASH})
    if sc.RESUME_DECISIONS in attrs:
        assert set(attrs[sc.RESUME_DECISIONS]) <= DECISION_TYPES
    else:
        assert attrs[sc.RESUME_VALUE_HASH].startswith("hmac:")


@given(json_values)
def test_free_text_next_to_a_decision_never_reaches_the_attributes(value: Any) -> None:
    answers = [{"type": "reject", "message": SECRET, "extra": value},
               {"decisions": [{"type": "edit", "edited_action": {"args": {"note": SECRET}}}]},
               {"interrupt-1": {"type": "respond", "message": SECRET}}]
    for answer in answers:
        attrs = answer_attributes(Command(resume=answer), HASH)
        assert SECRET not in json.dumps(attrs), attrs
        assert sc.RESUME_DECISIONS in attrs


def test_the_shapes_of_a_human_in_the_loop_answer() -> None:
    def decisions(value: Any) -> Any:
        return answer_attributes(Command(resume=value), HASH).get(sc.RESUME_DECISIONS)

    assert decisions({"decisions": [{"type": "approve"}, {"type": "reject"}]}) == (
        "approve", "reject")
    assert decisions({"type": "edit", "edited_action": {}}) == ("edit",)
    assert decisions({"id-1": {"type": "approve"}, "id-2": {"decisions": [
        {"type": "reject"}]}}) == ("approve", "reject")
    assert decisions({"decisions": [{"type": "approve"}, "yes"]}) is None  # not a decision list
    assert decisions({"type": "pay Bob 500"}) is None  # free text is not a decision type
    assert answer_attributes(Command(resume={"type": "pay Bob 500"}), HASH)[
        sc.RESUME_VALUE_HASH].startswith("hmac:")


def test_an_answer_that_cannot_be_serialised_records_nothing() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert answer_attributes(Command(resume=cyclic), HASH) == {}


def test_which_inputs_continue_a_thread() -> None:
    assert continues(None) and continues(Command(resume=False))
    assert not continues(Command(goto="agent")) and not continues({"messages": []})
