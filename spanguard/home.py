"""Where spanguard keeps its files, and how that directory is created.

Its own module so that the CLI can find the local store without importing the
OpenTelemetry SDK that :mod:`spanguard.config` needs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".spanguard"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """``home`` argument, else ``SPANGUARD_HOME``, else ``./.spanguard``."""
    if home is not None:
        return Path(home)
    return Path(os.environ.get("SPANGUARD_HOME") or DEFAULT_HOME)


def ensure_home(home: Path) -> None:
    """Create ``home`` readable by its owner only, if it does not exist yet.

    It holds the hashing key and traces that may carry raw content, so other
    users of the machine have no business listing it. An existing directory keeps
    the permissions its owner gave it.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist yet.

    For files whose first writer is a library that would create them with the
    process umask (SQLite): creating the file first fixes its mode, and SQLite
    gives its ``-wal`` and ``-shm`` files the database file's mode. An existing
    file keeps the permissions its owner gave it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
