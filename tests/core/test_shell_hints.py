"""The commands spanguard suggests work when pasted into a new shell.

A new shell has neither the virtualenv's ``bin`` on its PATH nor this process's
``SPANGUARD_HOME``: the hints are run with exactly that environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NEW_SHELL = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}


def run_in_new_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", command], env=NEW_SHELL, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_spanguard_demo_suggests_commands_a_new_shell_can_run(spanguard_home: Path) -> None:
    demo = subprocess.run([sys.executable, "-m", "spanguard", "demo"],
                          env=dict(os.environ, SPANGUARD_HOME=str(spanguard_home)),
                          cwd=spanguard_home.parent, capture_output=True, text=True,
                          timeout=120, check=False)
    assert demo.returncode == 0, demo.stderr
    (hint_line,) = [line for line in demo.stdout.splitlines() if line.startswith("next: ")]
    list_hint, show_hint = hint_line.removeprefix("next: ").split("  |  ")
    assert list_hint.endswith(" traces list")
    trace_prefix = show_hint.split()[-1]

    listed = run_in_new_shell(list_hint, spanguard_home.parent)
    assert listed.returncode == 0, f"{list_hint}: {listed.stderr}"
    assert trace_prefix in listed.stdout and "invoke_agent support_agent" in listed.stdout
    shown = run_in_new_shell(show_hint, spanguard_home.parent)
    assert shown.returncode == 0, f"{show_hint}: {shown.stderr}"
    assert shown.stdout.startswith("invoke_agent support_agent [AGENT]")
