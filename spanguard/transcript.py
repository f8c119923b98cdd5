"""Which messages of a run's conversation a span has already recorded.

An agent loop re-sends its whole history on every model call. A chat span that
records its full input therefore makes content capture quadratic in run length:
call k writes k messages, and every one of them is redacted again on export. A
:class:`Transcript` is kept per run instead. It remembers each conversation the
run's model calls have carried (a *thread*: the messages in order and the span
that recorded each), so a call's input splits into its *history* (the longest
prefix it shares with a thread, recorded by earlier spans) and the messages new
to it, which are all its span records. The call's answer extends the same thread,
so the next call finds it there too.

Messages are compared by identity first: LangGraph hands a run's model calls the
same message objects, so the shared prefix is found at C speed. Objects that
differ (a checkpointer hands back copies) are compared by value with ``same``,
and the copy then takes the original's place, so the next comparison is by
identity again. A message object edited in place after it was recorded is not
recorded again (LangGraph replaces messages rather than editing them).

Threads fork where a call diverges from every known conversation (an edited or
trimmed history, parallel branches); at most ``max_threads`` are kept per run,
the least recently used dropped first. Everything lives as long as the run's
root span: the transcript is dropped with it.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Recorder", "Transcript"]

_DEFAULT_MAX_THREADS = 8


class Recorder:
    """One span's place in a transcript: its span id (set once the span exists)
    and the thread and length its call's input ended at, where its answer goes."""

    __slots__ = ("end", "span_id", "thread")

    def __init__(self) -> None:
        self.span_id = 0
        self.thread: _Thread | None = None
        self.end = 0


class _Thread:
    __slots__ = ("messages", "recorders")

    def __init__(self, messages: list[Any], recorders: list[Recorder]) -> None:
        self.messages = messages
        self.recorders = recorders


class Transcript:
    """The conversations one run's model calls carried; thread-safe."""

    __slots__ = ("_lock", "_max_threads", "_same", "_threads")

    def __init__(self, same: Callable[[Any, Any], bool], *,
                 max_threads: int = _DEFAULT_MAX_THREADS) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self._same = same
        self._max_threads = max_threads
        self._threads: list[_Thread] = []
        self._lock = threading.Lock()

    def record_inputs(self, messages: Sequence[Any], recorder: Recorder
                      ) -> tuple[int, Recorder | None]:
        """Register ``messages`` as a call's input, recorded by ``recorder``'s span.

        Returns how many leading messages were recorded before (the call's
        history: ``recorder`` records only ``messages[history:]``) and the
        recorder of the last of them (None when the history is empty).
        """
        count = len(messages)
        if not count:
            return 0, None
        with self._lock:
            thread, history = self._match(messages)
            if thread is None:
                thread = self._add(_Thread(list(messages), [recorder] * count))
            elif history == len(thread.messages):
                thread.messages.extend(messages[history:])
                thread.recorders.extend([recorder] * (count - history))
            elif history < count:
                thread = self._add(_Thread(
                    thread.messages[:history] + list(messages[history:]),
                    thread.recorders[:history] + [recorder] * (count - history)))
            recorder.thread = thread
            recorder.end = count
            return history, thread.recorders[history - 1] if history else None

    def record_output(self, recorder: Recorder, message: Any) -> None:
        """The answer to ``recorder``'s call follows its input in the conversation."""
        with self._lock:
            thread = recorder.thread
            if thread is None:
                return
            end = recorder.end
            known = thread.messages
            if len(known) == end:
                known.append(message)
                thread.recorders.append(recorder)
            elif not (known[end] is message or self._same(known[end], message)):
                # Another call continued this conversation differently: fork it.
                self._add(_Thread([*known[:end], message],
                                  [*thread.recorders[:end], recorder]))

    def _match(self, messages: Sequence[Any]) -> tuple[_Thread | None, int]:
        """The thread sharing the longest prefix with ``messages``, and that length."""
        best: _Thread | None = None
        longest = 0
        threads = self._threads
        for index in range(len(threads) - 1, -1, -1):  # most recently used first
            thread = threads[index]
            shared = self._shared(thread, messages)
            if shared > longest:
                best, longest = thread, shared
                if shared == len(messages):
                    break
        if best is not None:
            threads.remove(best)
            threads.append(best)
        return best, longest

    def _shared(self, thread: _Thread, messages: Sequence[Any]) -> int:
        known = thread.messages
        if all(map(operator.is_, known, messages)):
            return min(len(known), len(messages))
        same = self._same
        shared = 0
        for known_message, message in zip(known, messages, strict=False):
            if known_message is not message:
                if not same(known_message, message):
                    break
                known[shared] = message  # identical by value: compare by identity next time
            shared += 1
        return shared

    def _add(self, thread: _Thread) -> _Thread:
        threads = self._threads
        threads.append(thread)
        if len(threads) > self._max_threads:
            del threads[0]
        return thread
