"""Keep LangChain from logging a guard's refusal as a broken callback.

LangChain's callback manager logs ``Error in <Handler>.<event> callback: <repr>``
at WARNING for anything a handler raises, before re-raising it for handlers that
set ``raise_error``. A guardrail refusal is raised on purpose to stop the step;
logged that way it reads as a telemetry bug. The handler notes each refusal it
raises (its class name and ``repr``) just before raising; the filter drops the
one record that reports exactly that refusal and lets everything else through,
including genuine errors of the same handler and every other handler's errors.

LangChain logs ``repr(error)`` (a string), not the exception, so the match is on
what the handler noted. The note is per thread: the manager logs synchronously
right after the handler raises, in the same thread (and, for async runs, the
same task step), so no other refusal can come in between.
"""

from __future__ import annotations

import logging
import threading

MANAGER_LOGGER = "langchain_core.callbacks.manager"
_MESSAGE = "Error in %s.%s callback: %s"


class _Noted(threading.local):
    refusal: tuple[str, str] | None = None


_noted = _Noted()


def note_refusal(handler: object, error: BaseException) -> None:
    """Record the refusal ``handler`` is about to raise, for the filter to recognise."""
    _noted.refusal = (type(handler).__name__, repr(error))


class RefusalFilter(logging.Filter):
    """Drops the manager's warning for a refusal noted by :func:`note_refusal`."""

    def filter(self, record: logging.LogRecord) -> bool:
        refusal = _noted.refusal
        if refusal is None or record.msg != _MESSAGE:
            return True
        args = record.args
        if isinstance(args, tuple) and len(args) == 3 and (args[0], args[2]) == refusal:
            _noted.refusal = None
            return False
        return True


_lock = threading.Lock()


def install() -> RefusalFilter:
    """Add the filter to LangChain's callback-manager logger once; returns the one installed."""
    log = logging.getLogger(MANAGER_LOGGER)
    with _lock:
        for existing in log.filters:
            if isinstance(existing, RefusalFilter):
                return existing
        added = RefusalFilter()
        log.addFilter(added)
        return added
