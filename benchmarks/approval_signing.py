"""What signing and verifying an approval adds, as ratios against unsigned in the same run.

Runs alternate (unsigned, signed, unsigned, signed, ...) and the median of each
is reported, because the machine is shared. Measured:

1. the reviewer's side: the canonical decision as bytes (unsigned) vs the same
   plus its Ed25519 signature (``approval_proof.sign``);
2. the executing side: ``approval_problem`` for an unsigned development-mode
   approval vs a signed one checked against the policy's keys;
3. one held call end to end on SQLite: hold -> approve -> execute (3 store
   writes, 3 audit appends), unsigned vs a signed approval with every audit
   record signed by the audit writer's key.

Usage: python benchmarks/approval_signing.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from spanguard.guardrails import HoldRules, ToolCall
from spanguard.guardrails.approval_proof import (
    approval_problem,
    sign,
    statement,
    statement_bytes,
)
from spanguard.guardrails.approvals import Approvals
from spanguard.guardrails.holds import HoldGuard, HoldPending
from spanguard.guardrails.reviewers import Reviewer, Reviewers
from spanguard.guardrails.signing import Signer
from spanguard.guardrails.stores import SQLiteStore
from spanguard.guardrails.stores.records import HoldRecord

REVIEWER = Signer.generate()
WRITER = Signer.generate()
REVIEWERS = Reviewers([Reviewer("maria", REVIEWER.public)])
HOLD = HoldRecord(id="hold_0123456789ab", tool="payments_send",
                  payload_hash="sha256:" + "ab" * 32, maker="agent", risk_tier="high",
                  reason="[holds] tools", created_at=time.time(),
                  expires_at=time.time() + 3600, status="approved", checker="maria",
                  server="payments-prod", action_class="destructive", rule="tools")
SIGNED = HoldRecord(**{**HOLD.to_json(), "signature": sign(HOLD, "maria", "approved", REVIEWER),
                       "signed_by": REVIEWER.public})


def per_call(calls: int, work: Callable[[], object]) -> float:
    """Microseconds per call of ``work``."""
    start = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - start) / calls * 1e6


def alternate(rounds: int, baseline: Callable[[], float],
              variant: Callable[[], float]) -> tuple[float, float]:
    base, var = [], []
    for _ in range(rounds):
        base.append(baseline())
        var.append(variant())
    return statistics.median(base), statistics.median(var)


def round_trip(root: Path, calls: int, signed: bool) -> float:
    """Milliseconds per hold -> approve -> execute on a fresh SQLite file."""
    store = SQLiteStore(root / f"{'signed' if signed else 'plain'}-{time.time_ns()}.db")
    rules = HoldRules(tools=("payments_*",), reviewers=REVIEWERS if signed else Reviewers())
    agent = Approvals.over(store, signer=WRITER if signed else None)
    reviewer = Approvals.over(store, signer=REVIEWER if signed else None)
    guard = HoldGuard(rules, approvals=agent)
    start = time.perf_counter()
    for n in range(calls):
        call = ToolCall("payments_send", {"to": "bob", "amount": n})
        held = guard.check(call, maker="agent")
        assert held is not None and isinstance(held.error, HoldPending)
        reviewer.approve(held.error.hold_id, "maria", signer=REVIEWER if signed else None,
                         reviewers=rules.reviewers)
        ran = guard.check(call, maker="agent")
        assert ran is not None and ran.kind == "allow"
    elapsed = (time.perf_counter() - start) / calls * 1e3
    store.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    assert approval_problem(SIGNED, REVIEWERS, time.time()) is None

    plain, signed = alternate(
        args.rounds,
        lambda: per_call(args.calls, lambda: statement_bytes(statement(HOLD, "maria",
                                                                       "approved"))),
        lambda: per_call(args.calls, lambda: sign(HOLD, "maria", "approved", REVIEWER)))
    print(f"sign one approval: {signed:.1f} us vs {plain:.1f} us for its canonical bytes "
          f"alone (+{signed - plain:.1f} us, {signed / plain:.1f}x)")

    plain, checked = alternate(
        args.rounds,
        lambda: per_call(args.calls, lambda: approval_problem(HOLD, Reviewers(), time.time())),
        lambda: per_call(args.calls, lambda: approval_problem(SIGNED, REVIEWERS, time.time())))
    print(f"verify one approval: {checked:.1f} us vs {plain:.1f} us unsigned "
          f"(+{checked - plain:.1f} us, {checked / plain:.1f}x)")

    trips = max(5, args.calls // 40)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        plain, signed = alternate(args.rounds, lambda: round_trip(root, trips, False),
                                  lambda: round_trip(root, trips, True))
    print(f"SQLite hold -> approve -> execute: {signed:.2f} ms signed vs {plain:.2f} ms "
          f"unsigned (+{signed - plain:.2f} ms, ratio {signed / plain:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
