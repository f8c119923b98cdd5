"""Who may approve what: the reviewers a policy lists, with their public keys.

::

    [holds.reviewers.maria]
    key = "ed25519:..."                      # spanguard reviewer init --as maria
    [holds.reviewers.ops-lead]
    key = "ed25519:..."
    tools = ["git_*"]                        # only these tools (globs) ...
    action_classes = ["destructive"]         # ... or calls of these action classes
    servers = ["git-prod"]                   # ... and only on these MCP servers

A reviewer with neither ``tools`` nor ``action_classes`` may approve any held
call; with either, a call whose tool matches ``tools`` or whose action class is
in ``action_classes``. ``servers`` narrows further: a call to another server (or
outside MCP) is not theirs. When a policy lists reviewers, an approval counts
only with a valid signature by one of these keys (the identity is the key), and
unsigned approvals are refused.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from spanguard.errors import ConfigError
from spanguard.guardrails import _parse
from spanguard.guardrails.identity import identity_key, identity_problem
from spanguard.guardrails.signing import parse_public_key
from spanguard.guardrails.stores.records import HoldRecord

_KEYS = ("key", "tools", "action_classes", "servers")


@dataclass(frozen=True)
class Reviewer:
    """One reviewer: a name (shown, and compared with the maker) bound to a key."""

    name: str
    key: str
    tools: tuple[str, ...] = ()
    action_classes: frozenset[str] = frozenset()
    servers: tuple[str, ...] = ()
    public_key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = f"reviewer {self.name!r}"
        problem = identity_problem(self.name)
        if problem is not None:
            raise ConfigError(source, f"the reviewer name {problem}")
        object.__setattr__(self, "public_key", parse_public_key(self.key, source))
        object.__setattr__(self, "tools", _parse.strings(self.tools, "tools", source))
        object.__setattr__(self, "action_classes", frozenset(
            _parse.strings(self.action_classes, "action_classes", source)))
        object.__setattr__(self, "servers", _parse.strings(self.servers, "servers", source))

    @property
    def scope(self) -> str:
        """What this reviewer may approve, in words (for refusals)."""
        parts = []
        if self.tools:
            parts.append(f"tools {', '.join(self.tools)}")
        if self.action_classes:
            parts.append(f"action classes {', '.join(sorted(self.action_classes))}")
        text = " or ".join(parts) if parts else "any tool"
        if self.servers:
            text += f" on servers {', '.join(self.servers)}"
        return text

    def may_approve(self, tool: str, action_class: str | None, server: str | None) -> bool:
        if self.servers and (server is None or not any(
                fnmatch.fnmatchcase(server, pattern) for pattern in self.servers)):
            return False
        if not self.tools and not self.action_classes:
            return True
        if any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.tools):
            return True
        return action_class is not None and action_class in self.action_classes

    def may_approve_hold(self, hold: HoldRecord) -> bool:
        return self.may_approve(hold.tool, hold.action_class, hold.server)


class Reviewers:
    """The policy's reviewers, looked up by key (signatures) or by name."""

    __slots__ = ("_by_key", "all")

    def __init__(self, reviewers: Iterable[Reviewer] = ()) -> None:
        self.all = tuple(reviewers)
        self._by_key = {r.key: r for r in self.all}
        names: dict[str, str] = {}
        for reviewer in self.all:
            folded = identity_key(reviewer.name)
            if folded in names:
                raise ConfigError("[holds.reviewers]",
                                  f"{reviewer.name!r} and {names[folded]!r} read as the same "
                                  "name", "give each reviewer a name a person can tell apart")
            names[folded] = reviewer.name
        if len(self._by_key) != len(self.all):
            raise ConfigError("[holds.reviewers]", "two reviewers share one key",
                              "each reviewer needs a key of their own")

    def __bool__(self) -> bool:
        return bool(self.all)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reviewers) and self.all == other.all

    def __hash__(self) -> int:
        return hash(self.all)

    def __repr__(self) -> str:
        return f"Reviewers({[r.name for r in self.all]})"

    def by_key(self, key: str | None) -> Reviewer | None:
        return self._by_key.get(key) if key is not None else None

    def keys(self) -> frozenset[str]:
        return frozenset(self._by_key)


def parse_reviewers(table: Any, source: str) -> Reviewers:
    """``[holds.reviewers]``: one sub-table per reviewer name."""
    body = _parse.table(table, "reviewers", source)
    reviewers = []
    for name, spec in body.items():
        where = f"{source}.reviewers.{name}"
        entry: Mapping[str, Any] = _parse.table(spec, name, where)
        _parse.check_keys(entry, _KEYS, where)
        if "key" not in entry:
            raise ConfigError(where, "key is missing",
                              "spanguard reviewer init --as NAME prints the line to add")
        reviewers.append(_parse.in_table(
            where, Reviewer, name, entry["key"],
            tools=_parse.strings(entry.get("tools", []), "tools", where),
            action_classes=frozenset(_parse.strings(entry.get("action_classes", []),
                                                    "action_classes", where)),
            servers=_parse.strings(entry.get("servers", []), "servers", where)))
    return _parse.in_table(source, Reviewers, reviewers)
