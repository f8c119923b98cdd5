"""Typed errors. Each message says what happened, what was kept, and what to do next."""

from __future__ import annotations

from collections.abc import Sequence


class SpanguardError(Exception):
    """Base class of every error spanguard raises on purpose."""


class ConfigError(SpanguardError, ValueError):
    """A setting (argument, environment variable or file) cannot be used.

    ``source`` names the file or variable so the user knows where to look.
    """

    def __init__(self, source: str, reason: str, hint: str = "") -> None:
        self.source = source
        self.reason = reason
        self.hint = hint
        message = f"{source}: {reason}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class StoreError(SpanguardError):
    """The local store (SQLite under SPANGUARD_HOME) cannot be read or written."""

    def __init__(self, path: str, reason: str, hint: str = "") -> None:
        self.path = path
        message = f"local store {path}: {reason}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class TraceNotFound(SpanguardError, LookupError):
    """No trace with that id is in the local store."""

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        super().__init__(
            f"no trace {trace_id!r} in the local store "
            "(run `spanguard traces list` to see the trace ids it holds)"
        )


class AmbiguousTraceId(SpanguardError, LookupError):
    """A trace id prefix matches more than one trace; ``candidates`` are their ids, newest first.

    A usage error, not a broken store: the user gave too few characters, and the
    candidates tell them which to add.
    """

    SHOWN = 10

    def __init__(self, prefix: str, candidates: Sequence[str]) -> None:
        self.prefix = prefix
        self.candidates = tuple(candidates)
        lines = [f"trace id prefix {prefix!r} matches {len(self.candidates)} traces "
                 "(give more characters of the id):"]
        lines += [f"  {candidate}" for candidate in self.candidates[:self.SHOWN]]
        if len(self.candidates) > self.SHOWN:
            lines.append(f"  ... and {len(self.candidates) - self.SHOWN} more")
        super().__init__("\n".join(lines))


class OutcomeError(SpanguardError, ValueError):
    """A user outcome cannot be recorded as given (unknown action, no target, bad rating)."""
