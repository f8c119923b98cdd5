"""Virtual environments with other pins and other Pythons, built once per checkout.

The compat checks (``tests/compat/test_*.py``) and ``make test-matrix`` each need an
environment the main ``.venv`` cannot be: mcp 1.x with langchain-mcp-adapters, mcp
2.x alone, no extras at all, another Python. Each is built by ``uv`` into
``.venv-compat/<name>-<hash>``, where the hash covers the interpreter, the
requirements and spanguard's declared dependencies; spanguard itself is installed
editable, so code changes need no rebuild. A later run finds the ``.complete``
marker and reuses it; a changed hash builds afresh and removes the stale one. A
lock per name lets parallel builders (``make compat-venvs``) and tests share them.

    python -m tests.compat.venvs build all        # in parallel
    python -m tests.compat.venvs matrix           # the smoke suite on each other Python
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spanguard._toml import toml_reader
from tests.compat.interpreters import SUPPORTED, Interpreter, default_interpreter, find

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SPANGUARD_COMPAT_CACHE", ROOT / ".venv-compat"))
TEST_TOOLS = ("pytest>=8", "pytest-asyncio>=0.24", "pytest-timeout>=2.3")
BUILD_TIMEOUT = 900


@dataclass(frozen=True)
class Spec:
    """One environment: the Python minor it needs (None: the default) and what it holds."""

    name: str
    requirements: tuple[str, ...]
    python: str | None = None
    oldest: bool = False  # the oldest supported Python present, else the default
    purpose: str = ""


SPECS: dict[str, Spec] = {spec.name: spec for spec in (
    Spec("mcp1", ("-e", ".[mcp-adapters]", "mcp-server-time==2026.8.18", *TEST_TOOLS),
         purpose="mcp 1.x + langchain-mcp-adapters (the extra) + a 1.x server from PyPI"),
    Spec("mcp2", ("-e", ".[langgraph,mcp]", "mcp>=2,<3", "mcp-server-time>=2026.10",
                  *TEST_TOOLS),
         purpose="mcp 2.x with only the langgraph and mcp extras"),
    Spec("bare", ("-e", "."), oldest=True,
         purpose="spanguard without extras, on the oldest supported Python present"),
    *(Spec(f"py{minor}", ("-e", ".[all]", "mcp-server-time", "mcp-server-git", *TEST_TOOLS),
           python=minor, purpose=f"the smoke suite on Python {minor}")
      for minor in SUPPORTED),
)}


class Unavailable(Exception):
    """The interpreter an environment needs is not on this machine."""


def interpreter_for(spec: Spec) -> Interpreter:
    if spec.oldest:
        for minor in SUPPORTED:
            found = find(minor)
            if found is not None:
                return found
        return default_interpreter()
    if spec.python is None:
        return default_interpreter()
    found = find(spec.python)
    if found is None:
        raise Unavailable(f"Python {spec.python} is not installed (looked on PATH and "
                          "under pyenv)")
    return found


def _declared_dependencies() -> str:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        project = toml_reader.load(handle)["project"]
    return json.dumps([project["dependencies"], project["optional-dependencies"],
                       project["requires-python"]], sort_keys=True)


def location(spec: Spec, python: Interpreter) -> Path:
    digest = hashlib.sha256(json.dumps(
        [python.version, spec.requirements, _declared_dependencies()]).encode()).hexdigest()
    return CACHE / f"{spec.name}-{digest[:12]}"


def _uv() -> list[str]:
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("uv")
    if found is None:
        raise RuntimeError("uv is not installed: it is in spanguard's dev extra "
                           "(pip install uv)")
    return [found]


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(name: str, log: bool = True) -> Path:
    """The environment's folder, built first when this checkout has none (or a stale one)."""
    spec = SPECS[name]
    python = interpreter_for(spec)
    target = location(spec, python)
    marker = target / ".complete"
    if marker.exists():
        return target
    with _locked(name):
        if marker.exists():
            return target
        for stale in CACHE.glob(f"{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        uv = _uv()
        env = dict(os.environ, VIRTUAL_ENV=str(target))
        for command in ([*uv, "venv", "--quiet", "--python", python.path, str(target)],
                        [*uv, "pip", "install", "--quiet", "--python",
                         str(target / "bin" / "python"), *spec.requirements]):
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT, check=False)
            if done.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise RuntimeError(f"building {target.name} failed: {' '.join(command)}\n"
                                   f"{done.stdout}{done.stderr}")
        seconds = time.monotonic() - started
        marker.write_text(json.dumps({"python": python.version, "seconds": round(seconds, 1),
                                      "requirements": spec.requirements}))
        if log:
            print(f"compat: built {target} (Python {python.version}) in {seconds:.1f} s",
                  file=sys.stderr, flush=True)
    return target


def python_of(name: str) -> Path:
    return ensure(name) / "bin" / "python"


def run_inside(name: str, *args: str, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the environment, from the repository root."""
    return subprocess.run([str(python_of(name)), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def wanted() -> list[str]:
    """Every environment ``make test`` uses: the compat checks' and the matrix's."""
    default = default_interpreter().minor
    return [name for name, spec in SPECS.items() if spec.python != default]


def build(names: Sequence[str]) -> int:
    """Build environments in parallel; one that needs an absent Python is reported."""
    def one(name: str) -> str | None:
        try:
            ensure(name)
        except Unavailable as exc:
            print(f"compat: {name}: skipped, {exc}", file=sys.stderr)
        except Exception as exc:
            return f"{name}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        failures = [f for f in pool.map(one, names) if f]
    for failure in failures:
        print(f"compat: {failure}", file=sys.stderr)
    return 1 if failures else 0


def matrix() -> int:
    """The smoke suite on every supported Python but the default, where it is installed."""
    default = default_interpreter().minor
    others = [minor for minor in SUPPORTED if minor != default]
    present = [minor for minor in others if find(minor) is not None]
    for minor in others:
        if minor not in present:
            print(f"test-matrix: NOTICE: Python {minor} is not installed here; its smoke "
                  "suite was not run (install it, e.g. `pyenv install "
                  f"{minor}`, to include it)", flush=True)
    if build([f"py{minor}" for minor in present]) != 0:
        return 1

    def smoke(minor: str) -> tuple[str, subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = run_inside(f"py{minor}", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/smoke")
        return minor, done, time.monotonic() - started

    # Two at a time: the suites wait on subprocesses (the proxy, the demo) as much as
    # they compute, and the machine has two cores.
    failed = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for minor, done, seconds in pool.map(smoke, present):
            summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
            print(f"test-matrix: Python {minor}: {summary} ({seconds:.0f} s)", flush=True)
            if done.returncode != 0:
                print(done.stdout[-6000:] + done.stderr[-3000:])
                failed.append(minor)
    if failed:
        print(f"test-matrix: FAILED on Python {', '.join(failed)}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compat.venvs")
    sub = parser.add_subparsers(dest="command", required=True)
    building = sub.add_parser("build", help="build environments (NAME... or all)")
    building.add_argument("names", nargs="+", choices=[*SPECS, "all"])
    sub.add_parser("matrix", help="run the smoke suite on each other supported Python")
    sub.add_parser("list", help="the environments and where they live")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(wanted() if "all" in args.names else args.names)
    if args.command == "matrix":
        return matrix()
    for spec in SPECS.values():
        try:
            where = str(location(spec, interpreter_for(spec)))
        except Unavailable as exc:
            where = str(exc)
        print(f"{spec.name:6} {spec.purpose}: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
