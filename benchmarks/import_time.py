"""Start-up cost of ``import spanguard`` and ``spanguard traces list``, in fresh interpreters.

A library imported by every agent process, and a CLI run from scripts, pay their
start-up on every launch; both are measured against ``python -c pass`` in the same
run (interleaved, median of N) because the machine is shared and absolute times
drift. The interpreters run in an empty directory, so they import the installed
spanguard, not a source tree the working directory happens to hold. Also
reported: what ``-X importtime`` attributes to the ``spanguard`` package itself
(cumulative, median), the figure least disturbed by the interpreter's own start-up.

Usage: python benchmarks/import_time.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def cli_command() -> list[str]:
    """The installed ``spanguard`` script next to this interpreter, else ``python -m``."""
    script = Path(sysconfig.get_path("scripts")) / "spanguard"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "spanguard"]


def wall_ms(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env,
                   cwd=env["SPANGUARD_HOME"])
    return (time.perf_counter() - start) * 1e3


def importtime_ms(env: dict[str, str]) -> float:
    """Cumulative time ``-X importtime`` gives the top-level ``spanguard`` import."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import spanguard"],
                            check=True, capture_output=True, text=True, env=env,
                            cwd=env["SPANGUARD_HOME"])
    for line in result.stderr.splitlines():
        fields = [part.strip() for part in line.split("|")]
        if len(fields) == 3 and fields[2] == "spanguard":
            return int(fields[1]) / 1e3
    raise RuntimeError("no 'spanguard' line in -X importtime output")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spanguard-import-") as home:
        env = {**os.environ, "SPANGUARD_HOME": home}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import spanguard": [sys.executable, "-c", "import spanguard"],
            "spanguard traces list": [*cli_command(), "traces", "list"],
        }
        for command in commands.values():  # warm the file cache and create the store
            wall_ms(command, env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        package: list[float] = []
        for _ in range(args.runs):
            for name, command in commands.items():
                samples[name].append(wall_ms(command, env))
            package.append(importtime_ms(env))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor = medians["python -c pass"]
    print(f"fresh interpreters, median of {args.runs} interleaved runs")
    for name, median in medians.items():
        print(f"  {name:24} {median:7.1f} ms   {median / floor:4.2f}x python -c pass"
              f"   (+{median - floor:.1f} ms)")
    print(f"  -X importtime spanguard  {statistics.median(package):7.1f} ms cumulative")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
