"""Every benchmark still runs (tiny sizes) and prints its comparison.

The figures themselves belong in the closing notes and the README, measured with
`make bench`; timing assertions do not belong in tests. This only keeps the
benchmark scripts from rotting.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import repo_root

BENCHMARKS = repo_root() / "benchmarks"

SMOKE = {
    "loop_budget_accuracy.py": (["--seeds", "5"], "LoopBudgetGuard.before_model_call"),
    "mcp_instrument_overhead.py": (["--calls", "40", "--block", "10"], "vs sdk"),
    "mcp_proxy_latency.py": (["--calls", "40", "--block", "10"], "ratio p50"),
    "governance_overhead.py": (["--spans", "300", "--rounds", "1"], "tail sampler"),
    "bench_llama_index.py": (["--queries", "3", "--rounds", "1"], "of bare"),
    "langgraph_overhead.py": (["--only", "abc", "--rounds", "1", "--runs", "1",
                              "--repetitions", "2"],
                              "spanguard added / floor added"),
    "import_time.py": (["--runs", "2"], "x python -c pass"),
    "redaction_quality.py": (["--rounds", "1", "--messages", "2"], "false-positive rate"),
    "approval_signing.py": (["--calls", "50", "--rounds", "1"], "verify one approval"),
    "span_loss.py": (["--spans", "2000", "--rate", "2000", "--seconds", "0.5", "--batches", "2"],
                     "every lost span counted (now): yes"),
    "taxonomy_guards_overhead.py": (["--calls", "20", "--rounds", "1"], "added"),
    "capture_scaling.py": (["--steps", "2,4", "--rounds", "1"], "identity attribute"),
    "sqlite_store.py": (["--ops", "5", "--rounds", "1"], "FULL / NORMAL"),
}


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py")
               if not p.name.startswith("_") and p.name != "run_all.py"}
    assert scripts == set(SMOKE)


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs(script: str) -> None:
    args, expected = SMOKE[script]
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout
