"""The SQLite store's durability: charges without an fsync, governance records with one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from spanguard.guardrails.audit import AuditLog
from spanguard.guardrails.stores import Charge, SQLiteStore
from spanguard.guardrails.stores.records import HoldRecord

NORMAL, FULL = 1, 2


def charge(amount: float = 1.0) -> Charge:
    return Charge("tenant:acme", bucket=1, span=1, amount=amount, limit=None, ttl=3600)


def hold(tool: str, n: int = 0) -> HoldRecord:
    now = time.time()
    return HoldRecord(id=f"h-{tool}-{n}", tool=tool, payload_hash=f"sha256:{n}", maker="agent",
                      risk_tier="high", reason="destructive", created_at=now,
                      expires_at=now + 3600)


def level(store: SQLiteStore) -> int:
    return int(store.conn.execute("PRAGMA synchronous").fetchone()[0])


def test_charges_commit_without_fsync_and_holds_and_audit_with_one(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "guardrails.db")
    assert level(store) == FULL  # the connection starts durable
    store.budgets.try_charge([charge()], now=time.time())
    assert level(store) == NORMAL
    record = hold("deploy")
    store.holds.create(record)
    assert level(store) == FULL
    store.budgets.add([charge()], now=time.time())
    assert level(store) == NORMAL
    AuditLog(store.audit).append("hold.created", subject=record.id)
    assert level(store) == FULL
    assert store.holds.transition(record.id, "pending", "rejected", time.time(),
                                  checker="bob") is not None
    assert level(store) == FULL
    assert store.budgets.spent("tenant:acme", 1, 1) == 2.0
    store.close()


def test_threads_mixing_charges_and_hold_writes_keep_every_write(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "guardrails.db")
    errors: list[BaseException] = []

    def charges() -> None:
        try:
            for _ in range(300):
                store.budgets.try_charge([charge()], now=time.time())
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def holds(worker: int) -> None:
        try:
            for n in range(50):
                store.holds.create(hold(f"tool-{worker}", n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=charges) for _ in range(3)]
    threads += [threading.Thread(target=holds, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.budgets.spent("tenant:acme", 1, 1) == 900.0
    assert len(store.holds.list(limit=1000)) == 150
    store.close()


_CHARGER = """
import sys, time
from spanguard.guardrails.stores import Charge, SQLiteStore
store = SQLiteStore(sys.argv[1])
while True:
    store.budgets.try_charge([Charge("tenant:acme", 1, 1, 1.0, None, 3600)], time.time())
    sys.stdout.write("charged\\n")
    sys.stdout.flush()
"""


def test_a_killed_process_loses_no_charge_it_was_told_was_made(tmp_path: Path) -> None:
    path = tmp_path / "guardrails.db"
    SQLiteStore(path).close()
    child = subprocess.Popen([sys.executable, "-c", _CHARGER, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = 0
    while acknowledged < 200:
        assert child.stdout.readline() == "charged\n"
        acknowledged += 1
    os.kill(child.pid, signal.SIGKILL)  # no shutdown, no checkpoint, no close
    child.wait(timeout=30)
    acknowledged += sum(1 for line in child.stdout if line == "charged\n")
    store = SQLiteStore(path)
    spent = store.budgets.spent("tenant:acme", 1, 1)
    store.close()
    # Every acknowledged charge survived; at most one more committed before its ack.
    assert acknowledged <= spent <= acknowledged + 1
