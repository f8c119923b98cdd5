"""Code run in spawned processes by the first-start hash key test (must be importable)."""

from __future__ import annotations

import errno
import os
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from spanguard.hashing import KeyedHasher, load_or_create_key


def _no_hard_links(src: object, dst: object) -> None:
    raise OSError(errno.EPERM, "hard links are not supported on this file system")


def first_starts(results: Queue[list[tuple[str, str | None]]], homes: list[str],
                 barrier: Barrier, hard_links: bool) -> None:
    """For each fresh home, load the key the moment every sibling is ready; report the
    hashed tenant id and the problem (if any) of each start."""
    if not hard_links:
        os.link = _no_hard_links
    reports = []
    for home in homes:
        barrier.wait(timeout=120)
        key, problem = load_or_create_key(Path(home))
        try:
            reports.append((KeyedHasher(key)("tenant-acme"), problem))
        except ValueError as exc:  # a key read half-written: report it, do not hang the test
            reports.append(("", f"unusable key {key!r}: {exc}"))
    results.put(reports)
