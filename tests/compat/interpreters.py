"""Finding the supported Pythons on this machine: on PATH, or installed by pyenv.

A pyenv shim (``python3.10`` on PATH) exists for every installed version but runs
only when that version is selected, so each candidate is run before it is trusted.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
"""The Python minors spanguard supports (pyproject's classifiers say the same)."""


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # X.Y.Z

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def _probe(path: str) -> Interpreter | None:
    try:
        done = subprocess.run([path, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return Interpreter(path, version) if done.returncode == 0 and version else None


@cache
def find(minor: str) -> Interpreter | None:
    """A working interpreter of ``minor`` (e.g. ``"3.10"``), or None."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [
        *sorted(glob.glob(str(pyenv_root / "versions" / f"{minor}.*" / "bin" / f"python{minor}")),
                reverse=True),
        shutil.which(f"python{minor}") or "",
        f"/usr/bin/python{minor}",
        f"/usr/local/bin/python{minor}",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            found = _probe(candidate)
            if found is not None and found.minor == minor:
                return found
    return None


def default_interpreter() -> Interpreter:
    """The interpreter running this code (the main ``.venv``'s)."""
    major, minor, micro = sys.version_info[:3]
    return Interpreter(sys.executable, f"{major}.{minor}.{micro}")
