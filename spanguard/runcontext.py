"""Who a run is for, visible to code that runs outside the framework that started it.

Every run is tagged with a session (conversation) id, a user and a tenant (keyed
hashes on its spans and in its guards' ``RunState``, never the raw ids) and the
maker identity the guards act for. LangChain carries them in a run's metadata; a
LlamaIndex query, an MCP client call or plain application code has no such place,
so they live here, in one ``contextvars`` variable::

    with spanguard.run_context(user_id="u-42", tenant_id="acme", session_id="chat-7"):
        query_engine.query("...")      # its spans and its window budgets: acme's

The LangChain handler publishes its root run's values here while a tool body runs,
so a LlamaIndex query inside a LangGraph tool is tagged, and charged, like the agent
run that called it. A nested ``run_context`` overrides the values it names and
inherits the others. Values are held raw and in-process only: adapters hash them
with the configured key when a run starts, and this module exports nothing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from spanguard.attributes import Attributes, run_identity_attributes
from spanguard.hashing import KeyedHasher

__all__ = ["RunContext", "attach", "current_run_context", "detach", "run_context"]

_FIELDS = ("user_id", "tenant_id", "session_id", "identity")


@dataclass(frozen=True, slots=True)
class RunContext:
    """A run's identity inputs, raw. ``session_id`` is the conversation id."""

    user_id: str | None = None
    tenant_id: str | None = None
    session_id: str | None = None
    identity: str | None = None

    def over(self, outer: RunContext | None) -> RunContext:
        """These values, with the ones left unset taken from ``outer``."""
        if outer is None or outer is self:
            return self
        return RunContext(self.user_id or outer.user_id, self.tenant_id or outer.tenant_id,
                          self.session_id or outer.session_id, self.identity or outer.identity)

    def attributes(self, hasher: KeyedHasher) -> Attributes:
        """The run-level span attributes: the conversation id as the hasher writes it
        (hashed unless raw conversation ids were chosen), hashed user and tenant."""
        return run_identity_attributes(
            conversation_id=self.session_id, hasher=hasher,
            user_hash=hasher(self.user_id) if self.user_id else None,
            tenant_hash=hasher(self.tenant_id) if self.tenant_id else None)

    def guard_ids(self, hash_id: Callable[[str], str]) -> dict[str, str | None]:
        """The keyword arguments of ``Enforcer.start_run``: every id hashed but the maker."""
        return {"identity": self.identity,
                "session": hash_id(self.session_id) if self.session_id else None,
                "user": hash_id(self.user_id) if self.user_id else None,
                "tenant": hash_id(self.tenant_id) if self.tenant_id else None}

    @property
    def hashes_ids(self) -> bool:
        """Whether any value needs the hashing key (the maker identity is not hashed)."""
        return bool(self.user_id or self.tenant_id or self.session_id)


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "spanguard_run_context", default=None)


def current_run_context() -> RunContext | None:
    """The run context in effect here, or None when nobody set one."""
    return _current.get()


@contextmanager
def run_context(*, user_id: str | None = None, tenant_id: str | None = None,
                session_id: str | None = None,
                identity: str | None = None) -> Iterator[RunContext]:
    """Tag every run started inside the block (in this thread or task) with these ids.

    An empty string counts as not given. Values must be strings: a typed error
    now is better than an id that silently hashes to something unexpected.
    """
    values = (user_id, tenant_id, session_id, identity)
    for name, value in zip(_FIELDS, values, strict=True):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"run_context({name}=...) takes a string or None, got "
                            f"{type(value).__name__}; pass str({name}) if that is the id")
    context = RunContext(*(value or None for value in values)).over(_current.get())
    token = _current.set(context)
    try:
        yield context
    finally:
        detach(token)


def attach(context: RunContext) -> contextvars.Token[RunContext | None]:
    """Make ``context`` current (for adapters); undo with :func:`detach`."""
    return _current.set(context)


def detach(token: contextvars.Token[RunContext | None]) -> bool:
    """Undo :func:`attach`; False when called from another Context (nothing changed).

    A token can only be reset in the Context that created it; a framework that
    reports a step's end from another task must not corrupt that task's context.
    """
    try:
        _current.reset(token)
    except (ValueError, RuntimeError):
        return False
    return True
