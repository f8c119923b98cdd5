"""What one write to the SQLite guardrail store costs, at the durability each record kind has.

A window-budget charge (``store.budgets.try_charge``: read the window, check, add, in
one ``BEGIN IMMEDIATE`` transaction) runs on every model and tool call of a policy with
window budgets. spanguard commits charges with ``synchronous=NORMAL`` (no fsync; see
``guardrails/stores/sqlite.py``) and hold and audit writes with ``synchronous=FULL``.
This measures, in alternating blocks in one process, against two files in the same
directory:

  (a) a charge as spanguard commits it (WAL, ``synchronous=NORMAL``)
  (b) the same charge with an fsync per commit (WAL, ``synchronous=FULL``)
  (c) a hold created plus an audit record appended (durable, as spanguard commits them)

Printed: median microseconds per operation and (b)/(a).

Run: ``python benchmarks/sqlite_store.py [--ops 300 --rounds 7 --dir PATH]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from spanguard.guardrails.audit import AuditLog
from spanguard.guardrails.stores import Charge, SQLiteStore
from spanguard.guardrails.stores.records import HoldRecord


def charges(store: SQLiteStore) -> Callable[[int], None]:
    def run(n: int) -> None:
        store.budgets.try_charge([Charge("tenant:acme", 1, 1, 1.0, 1e12, 3600),
                                  Charge(f"session:{n % 50}", 1, 1, 1.0, 1e12, 3600)],
                                 time.time())
    return run


def holds_and_audit(store: SQLiteStore) -> Callable[[int], None]:
    audit = AuditLog(store.audit)
    counter = [0]

    def run(n: int) -> None:
        counter[0] += 1
        now = time.time()
        hold_id = f"h-{counter[0]}"
        store.holds.create(HoldRecord(id=hold_id, tool="deploy", payload_hash=f"sha256:{n}",
                                      maker="agent", risk_tier="high", reason="destructive",
                                      created_at=now, expires_at=now + 3600))
        audit.append("hold.created", subject=hold_id)
    return run


def block(operation: Callable[[int], None], ops: int) -> float:
    """Microseconds per operation, wall time (an fsync waits, it does not burn CPU)."""
    start = time.perf_counter()
    for n in range(ops):
        operation(n)
    return (time.perf_counter() - start) / ops * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=300, help="operations per block")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    parser.add_argument("--dir", default=None, help="where the database files go")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        chosen = SQLiteStore(Path(tmp) / "normal.db")
        fsynced = SQLiteStore(Path(tmp) / "full.db")
        # (b) only: pin the connection to FULL; the store would otherwise switch it
        # to NORMAL before each charge (it believes it is still at FULL).
        fsynced.conn.execute("PRAGMA synchronous=FULL")
        fsynced._durable = False
        configs = {"a": charges(chosen), "b": charges(fsynced), "c": holds_and_audit(chosen)}
        times: dict[str, list[float]] = {key: [] for key in configs}
        for operation in configs.values():  # warm-up
            block(operation, 20)
        for _ in range(args.rounds):
            for key, operation in configs.items():
                times[key].append(block(operation, args.ops))
        chosen.close()
        fsynced.close()
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"SQLite guardrail store, {args.rounds} alternating rounds x {args.ops} operations; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"(a) charge, synchronous=NORMAL (spanguard's): {median['a']:8.1f} us")
    print(f"(b) charge, synchronous=FULL:                 {median['b']:8.1f} us")
    print(f"(c) hold create + audit append, FULL:         {median['c']:8.1f} us")
    print(f"charge cost, FULL / NORMAL: {median['b'] / median['a']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
