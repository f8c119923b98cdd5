"""``spanguard.run_context``: who a run is for, for code outside a framework's run metadata."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading

import pytest

import spanguard
from spanguard import semconv as sc
from spanguard.hashing import KeyedHasher
from spanguard.runcontext import RunContext, attach, current_run_context, detach

FIELDS = ("user_id", "tenant_id", "session_id", "identity")


def test_a_block_sets_the_context_and_restores_the_previous_one() -> None:
    assert current_run_context() is None
    with spanguard.run_context(user_id="u-1", tenant_id="acme") as outer:
        assert current_run_context() is outer == RunContext("u-1", "acme")
        with spanguard.run_context(tenant_id="globex", session_id="chat-7") as inner:
            assert inner == RunContext("u-1", "globex", "chat-7")
        assert current_run_context() is outer
    assert current_run_context() is None


def test_every_nesting_takes_the_innermost_value_given_per_field() -> None:
    """Exhaustively over two levels: given (a string), empty string, or not given."""
    choices = ("outer", "", None)
    for outer_values, inner_values in itertools.product(
            itertools.product(choices, repeat=4), itertools.product(choices, repeat=4)):
        outer = dict(zip(FIELDS, outer_values, strict=True))
        inner = {k: (f"inner-{v}" if v else v)
                 for k, v in zip(FIELDS, inner_values, strict=True)}
        with spanguard.run_context(**outer), spanguard.run_context(**inner) as seen:
            for field in FIELDS:
                expected = inner[field] or outer[field] or None
                assert getattr(seen, field) == expected, (outer, inner, field)
        assert current_run_context() is None


@pytest.mark.parametrize("value", [42, b"acme", ["acme"], {"id": 1}])
def test_a_non_string_id_is_a_typed_error_and_changes_nothing(value: object) -> None:
    with spanguard.run_context(tenant_id="acme"):
        with pytest.raises(TypeError, match=r"run_context\(user_id=...\) takes a string"), \
                spanguard.run_context(user_id=value):  # type: ignore[arg-type]
            pass
        assert current_run_context() == RunContext(tenant_id="acme")


def test_an_exception_in_the_block_still_restores_the_context() -> None:
    with pytest.raises(RuntimeError), spanguard.run_context(user_id="u-1"):
        raise RuntimeError("boom")
    assert current_run_context() is None


def test_threads_and_tasks_each_see_only_their_own_context() -> None:
    seen: dict[str, str | None] = {}
    barrier = threading.Barrier(8)

    def work(tenant: str) -> None:
        with spanguard.run_context(tenant_id=tenant):
            barrier.wait()  # every thread is inside its block at once
            context = current_run_context()
            seen[tenant] = context.tenant_id if context else None

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {f"t{i}": f"t{i}" for i in range(8)}

    async def task(tenant: str) -> str | None:
        with spanguard.run_context(tenant_id=tenant):
            for _ in range(3):
                await asyncio.sleep(0)  # interleave with the other tasks
            context = current_run_context()
            return context.tenant_id if context else None

    async def main() -> list[str | None]:
        return await asyncio.gather(*(task(f"a{i}") for i in range(20)))

    assert asyncio.run(main()) == [f"a{i}" for i in range(20)]
    assert current_run_context() is None


def test_detach_from_another_context_changes_nothing() -> None:
    token = attach(RunContext(tenant_id="acme"))
    assert contextvars.copy_context().run(detach, token) is False
    assert contextvars.Context().run(detach, token) is False
    assert current_run_context() == RunContext(tenant_id="acme")
    assert detach(token) is True
    assert current_run_context() is None


def test_attributes_and_guard_ids_hash_every_id_but_the_maker() -> None:
    hasher = KeyedHasher(b"k" * 32)
    context = RunContext("u-1", "acme", "chat-7", "alice")
    attrs = context.attributes(hasher)
    assert attrs[sc.USER_HASH] == attrs[sc.OI_USER_ID] == hasher("u-1")
    assert attrs[sc.TENANT_HASH] == hasher("acme")
    assert attrs[sc.GEN_AI_CONVERSATION_ID] == attrs[sc.OI_SESSION_ID] == hasher("chat-7")
    assert "u-1" not in attrs.values() and "acme" not in attrs.values()
    assert context.guard_ids(hasher) == {"identity": "alice", "session": hasher("chat-7"),
                                         "user": hasher("u-1"), "tenant": hasher("acme")}
    assert RunContext(identity="alice").attributes(hasher) == {}
