"""The spanguard home and its hashing key: created once, privately, even under a race."""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path

import pytest

import spanguard
from spanguard.hashing import load_or_create_key
from tests.core import _key_workers

STARTERS = 16
ROUNDS = 10


@pytest.mark.parametrize("hard_links", [True, False], ids=["link", "o_excl"])
def test_processes_starting_together_on_a_fresh_home_share_one_key(
        tmp_path: Path, hard_links: bool) -> None:
    homes = [tmp_path / f"fresh-{n}" / ".spanguard" for n in range(ROUNDS)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(STARTERS)
    results = ctx.Queue()
    workers = [ctx.Process(target=_key_workers.first_starts,
                           args=(results, [str(h) for h in homes], barrier, hard_links))
               for _ in range(STARTERS)]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    for round_, home in enumerate(homes):
        starts = [report[round_] for report in reports]
        assert [problem for _, problem in starts] == [None] * STARTERS
        assert len({tenant for tenant, _ in starts}) == 1
        assert [p.name for p in home.iterdir()] == ["hash.key"]


def test_a_new_home_and_its_key_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "new" / ".spanguard"
    handle = spanguard.configure(home=home)
    handle.shutdown()
    assert handle.problems == []
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "hash.key").stat().st_mode & 0o777 == 0o600


def test_an_existing_home_keeps_the_permissions_its_owner_gave_it(tmp_path: Path) -> None:
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(0o750)
    load_or_create_key(home)
    assert home.stat().st_mode & 0o777 == 0o750


def test_an_empty_key_file_is_reported_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "hash.key").write_text("")
    key, problem = load_or_create_key(tmp_path)
    assert len(key) == 32
    assert problem is not None and "the file is empty" in problem
    assert "SPANGUARD_HASH_KEY" in problem


def test_a_key_file_shorter_than_16_bytes_is_reported_not_used(tmp_path: Path) -> None:
    (tmp_path / "hash.key").write_text("abcd")
    key, problem = load_or_create_key(tmp_path)
    assert key != bytes.fromhex("abcd")
    assert problem is not None and "shorter than 16 bytes" in problem


def test_without_hard_links_the_key_is_still_created_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    first, problem = load_or_create_key(tmp_path)
    again, _ = load_or_create_key(tmp_path)
    assert problem is None and first == again
    assert [p.name for p in tmp_path.iterdir()] == ["hash.key"]
    assert (tmp_path / "hash.key").stat().st_mode & 0o777 == 0o600
