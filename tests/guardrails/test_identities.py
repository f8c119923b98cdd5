"""The maker cannot approve under a name that only looks different.

Identities compare after NFKC, case folding and the TR39 confusable skeleton;
invisible and control characters are refused outright. Known spellings first,
then generated ones (hypothesis) built from the transformations an attacker has:
look-alike letters from other scripts, fullwidth and mathematical forms,
decomposed accents, case, and invisible characters.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanguard.guardrails import HoldRules, ToolCall
from spanguard.guardrails.approvals import (
    ApprovalError,
    InvalidIdentity,
    MakerCheckerViolation,
)
from spanguard.guardrails.holds import HoldGuard, HoldPending, InvalidMaker
from spanguard.guardrails.identity import identity_problem, same_identity
from tests.guardrails._holds_support import memory_approvals

RULES = HoldRules(tools=("payments_*",))
PAY = ToolCall("payments_send", {"to": "bob", "amount": 5})

# Letters of other scripts that render like Latin ones (each folds in TR39's data).
LOOKALIKES = {"a": "\u0430", "c": "\u0441", "e": "\u0435", "o": "\u043e", "p": "\u0440",
              "x": "\u0445", "y": "\u0443", "i": "\u0456", "j": "\u0458", "s": "\u0455",
              "h": "\u04bb", "d": "\u0501", "v": "\u03bd", "u": "\u03c5", "g": "\u0261",
              "q": "\u051b", "w": "\u051d", "n": "\u0578"}
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f",
             "\u180e", "\u2061", "\u202e", "\u2066", "\ufe0f", "\u3164"]
CONTROLS = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\ue000"]


def pending(maker: str) -> tuple[object, str]:
    approvals = memory_approvals()
    decision = HoldGuard(RULES, approvals=approvals).check(PAY, maker=maker)
    assert decision is not None and isinstance(decision.error, HoldPending)
    return approvals, decision.error.hold_id


@pytest.mark.parametrize("checker", [
    "bot", "BOT", " Bot ", "b\u043et", "\u0432ot".replace("\u0432", "b"),
    "\uff42\uff4f\uff54", "\U0001d41b\U0001d428\U0001d42d", "b\u03bft",
])
def test_look_alike_spellings_of_the_maker_cannot_approve(checker: str) -> None:
    approvals, hold_id = pending("bot")
    with pytest.raises(MakerCheckerViolation):
        approvals.approve(hold_id, checker)  # type: ignore[attr-defined]
    assert approvals.get(hold_id).status == "pending"  # type: ignore[attr-defined]


def test_nfd_and_nfc_forms_are_one_identity() -> None:
    nfc = "Jos\u00e9"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd and same_identity(nfc, nfd)
    approvals, hold_id = pending(nfc)
    with pytest.raises(MakerCheckerViolation):
        approvals.approve(hold_id, nfd)  # type: ignore[attr-defined]


@pytest.mark.parametrize("char", INVISIBLE + CONTROLS)
def test_invisible_and_control_characters_are_refused_in_a_checker(char: str) -> None:
    approvals, hold_id = pending("bot")
    with pytest.raises(InvalidIdentity, match=f"U\\+{ord(char):04X}"):
        approvals.approve(hold_id, f"car{char}ol")  # type: ignore[attr-defined]
    assert identity_problem(f"bot{char}") is not None


def test_a_maker_with_an_invisible_character_is_refused_and_nothing_is_held() -> None:
    approvals = memory_approvals()
    decision = HoldGuard(RULES, approvals=approvals).check(PAY, maker="agent\u200b")
    assert decision is not None and decision.kind == "deny"
    assert isinstance(decision.error, InvalidMaker) and "U+200B" in str(decision.error)
    assert approvals.list() == [] and approvals.audit.records() == []


def test_different_people_stay_different() -> None:
    approvals, hold_id = pending("agent")
    approved = approvals.approve(hold_id, "carol")  # type: ignore[attr-defined]
    assert approved.status == "approved"
    assert not same_identity("alice", "bob") and not same_identity("maria", "mario")
    with pytest.raises(ApprovalError):
        approvals.approve(hold_id, "   ")  # type: ignore[attr-defined]


@st.composite
def disguised(draw: st.DrawFn, name: str) -> str:
    """``name`` (NFD) as an attacker could retype it: every letter possibly swapped for
    a look-alike, a fullwidth or bold form, or upper case; then NFD or NFC."""
    out = []
    for char in name:
        if not ("a" <= char <= "z"):
            out.append(char)  # a combining accent stays where it is
            continue
        form = draw(st.sampled_from(["same", "upper", "lookalike", "fullwidth", "bold"]))
        if form == "upper":
            char = char.upper()
        elif form == "lookalike" and char in LOOKALIKES:
            char = LOOKALIKES[char]
        elif form == "fullwidth":
            char = chr(ord(char) + 0xFEE0)
        elif form == "bold":
            char = chr(0x1D41A + ord(char) - ord("a"))
        out.append(char)
    text = "".join(out)
    return text if draw(st.booleans()) else unicodedata.normalize("NFC", text)


NAMES = st.text(alphabet="abcdeghijopqsuvwxy\u00e9\u00e8", min_size=2, max_size=10)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), maker=NAMES)
def test_no_generated_disguise_of_the_maker_can_approve(data: st.DataObject,
                                                        maker: str) -> None:
    checker = data.draw(disguised(unicodedata.normalize("NFD", maker)))
    if data.draw(st.booleans()):
        spot = data.draw(st.integers(0, len(checker)))
        checker = checker[:spot] + data.draw(st.sampled_from(INVISIBLE)) + checker[spot:]
    approvals, hold_id = pending(maker)
    with pytest.raises((MakerCheckerViolation, InvalidIdentity)):
        approvals.approve(hold_id, checker)  # type: ignore[attr-defined]
    assert approvals.get(hold_id).status == "pending"  # type: ignore[attr-defined]
