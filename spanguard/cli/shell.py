"""The ``spanguard`` command as a user should type it in a new shell.

Hints such as "next: spanguard traces list" are only useful if they work when
pasted. After ``make demo`` the script sits in ``.venv/bin``, which a new shell
does not have on its PATH (an activated virtualenv is not inherited either), so
the hint names the running installation's script by its path, and adds
``--home`` when the traces are not where a new shell looks by default
(``./.spanguard``; a new shell has no ``SPANGUARD_HOME`` unless the user's
profile sets one, and then an explicit ``--home`` does no harm).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from spanguard.home import DEFAULT_HOME

_SCRIPT = "spanguard.exe" if os.name == "nt" else "spanguard"


def spanguard_command(home: Path | None = None) -> str:
    """This installation's ``spanguard``, reading ``home``, as a shell command line.

    Paths below the working directory are given relative to it, as ``make``
    targets are: the hints are meant for the directory the user is in.
    """
    command = _program()
    if home is not None and _absolute(home) != _absolute(Path(DEFAULT_HOME)):
        command += " --home " + shlex.quote(_shortest(home))
    return command


def _program() -> str:
    """The script next to the running interpreter; bare ``spanguard`` only when that
    is what PATH finds outside a virtualenv; ``python -m spanguard`` without a script."""
    script = Path(sysconfig.get_path("scripts")) / _SCRIPT
    if not script.exists():
        return shlex.quote(sys.executable) + " -m spanguard"
    on_path = shutil.which("spanguard")
    outside_virtualenv = sys.prefix == sys.base_prefix
    if outside_virtualenv and on_path and _absolute(Path(on_path)) == _absolute(script):
        return "spanguard"
    path = _shortest(script)
    return shlex.quote(path if os.sep in path else os.path.join(".", path))


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _shortest(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    absolute = _absolute(path)
    try:
        relative = absolute.relative_to(_absolute(Path.cwd()))
    except ValueError:
        return str(absolute)
    return str(relative) if relative.parts else "."
