"""`spanguard traces show PREFIX`: literal prefixes, and an ambiguous one is a usage error."""

from __future__ import annotations

from pathlib import Path

import pytest

from spanguard.cli import main
from spanguard.errors import AmbiguousTraceId, TraceNotFound
from spanguard.store import StoredSpan, TraceStore

EXIT_NOT_FOUND = 3
EXIT_AMBIGUOUS = 5


def _span(trace_id: str, start: int) -> StoredSpan:
    return StoredSpan(trace_id=trace_id, span_id=f"{start:016x}", parent_span_id=None,
                      name=f"invoke_agent {trace_id}", kind="INTERNAL", start_time=start,
                      end_time=start + 1, status="OK", status_message=None)


def _store(home: Path, *trace_ids: str) -> TraceStore:
    store = TraceStore.in_home(home)
    store.write(_span(trace_id, start) for start, trace_id in enumerate(trace_ids, start=1))
    return store


@pytest.mark.parametrize("special", ["%", "_", "\\"])
def test_like_wildcards_in_a_prefix_match_only_themselves(spanguard_home: Path,
                                                          special: str) -> None:
    store = _store(spanguard_home, f"a{special}1", "az1", "az2")
    assert [s.trace_id for s in store.trace(f"a{special}")] == [f"a{special}1"]


@pytest.mark.parametrize("prefix", ["%", "_", "ab_", "a%", "%1", "\\", "' OR '1'='1"])
def test_a_prefix_made_of_wildcards_finds_nothing(spanguard_home: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  prefix: str) -> None:
    _store(spanguard_home, "abc1" + "0" * 28, "abd2" + "0" * 28)
    with pytest.raises(TraceNotFound):
        TraceStore.in_home(spanguard_home).trace(prefix)
    assert main(["traces", "show", prefix]) == EXIT_NOT_FOUND
    assert "no trace" in capsys.readouterr().err


def test_an_ambiguous_prefix_is_a_usage_error_listing_the_candidates(
        spanguard_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    older, newer, other = "ab01" + "0" * 28, "ab02" + "0" * 28, "cd03" + "0" * 28
    _store(spanguard_home, older, newer, other)
    with pytest.raises(AmbiguousTraceId) as raised:
        TraceStore.in_home(spanguard_home).trace("AB")
    assert raised.value.candidates == (newer, older)

    assert main(["traces", "show", "ab"]) == EXIT_AMBIGUOUS
    err = capsys.readouterr().err
    assert "matches 2 traces" in err and "give more characters" in err
    assert f"  {newer}\n  {older}" in err
    assert other not in err and "local store" not in err
    assert main(["traces", "show", "ab02"]) == 0
    assert f"invoke_agent {newer}" in capsys.readouterr().out


def test_a_prefix_matching_many_traces_lists_the_newest_and_counts_the_rest(
        spanguard_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [f"{n:032x}" for n in range(25)]
    _store(spanguard_home, *ids)
    assert main(["traces", "show", "0"]) == EXIT_AMBIGUOUS
    err = capsys.readouterr().err
    listed = [line.strip() for line in err.splitlines() if line.startswith("  0")]
    assert listed == ids[::-1][:AmbiguousTraceId.SHOWN]
    assert "matches 25 traces" in err and "... and 15 more" in err
