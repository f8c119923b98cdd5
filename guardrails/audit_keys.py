"""``[audit]``: the key that signs the audit records of the side that runs tools.

::

    [audit]
    writer_key = "ed25519:..."                       # spanguard audit keygen prints it
    writer_key_file = "/etc/spanguard/audit.key"     # else $SPANGUARD_AUDIT_KEY_FILE

With ``writer_key`` set, every record must be signed, by this key or by a
reviewer's key (a reviewer signs the records of their own decisions), and
``spanguard audit verify --policy`` refuses a log with an unsigned record or one
signed by another key. The private key belongs to the process that runs the
tools (the MCP proxy, the application): keep it outside the agent's home and,
where the agent is untrusted, out of its reach (another OS user, a container, a
secret mount). The policy itself pins the public key, so a key file swapped for
another is refused rather than used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spanguard.errors import ConfigError
from spanguard.guardrails import _parse
from spanguard.guardrails.signing import Signer, parse_public_key

AUDIT_KEY_ENV = "SPANGUARD_AUDIT_KEY_FILE"
_TABLE_KEYS = ("writer_key", "writer_key_file")


@dataclass(frozen=True)
class AuditKeys:
    """The audit writer's public key (required signatures) and where its private key is."""

    writer_key: str | None = None
    writer_key_file: str | None = None

    def __post_init__(self) -> None:
        source = "[audit]"
        if self.writer_key is not None:
            parse_public_key(self.writer_key, source, "writer_key")
        _parse.optional_text(self.writer_key_file, "writer_key_file", source)
        if self.writer_key_file is not None and self.writer_key is None:
            raise ConfigError(source, "writer_key_file is set without writer_key",
                              "pin the key's public half with writer_key = \"ed25519:...\" "
                              "(spanguard audit keygen prints it)")

    def signer(self) -> Signer | None:
        """The writer's key, loaded once per file; None when records are not signed.

        Raises ConfigError when ``writer_key`` is set but no key file is given, or
        the file holds another key: an executing side that cannot sign refuses
        to act rather than write records the verifier would reject.
        """
        if self.writer_key is None:
            return None
        path = self.writer_key_file or os.environ.get(AUDIT_KEY_ENV)
        if not path:
            raise ConfigError("[audit]", "writer_key is set but there is no private key to "
                                         "sign the audit records with",
                              f"set writer_key_file, or {AUDIT_KEY_ENV} in the process that "
                              "runs the tools")
        signer = _load(os.path.abspath(path))
        if signer.public != self.writer_key:
            raise ConfigError(path, "this key is not the [audit] writer_key of the policy",
                              f"its public key is {signer.public}")
        return signer


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Signer:
    return Signer.from_file(path)


def parse_audit_table(table: Mapping[str, Any], source: str) -> AuditKeys:
    """``[audit]``: writer_key (public, ``ed25519:...``), writer_key_file."""
    _parse.check_keys(table, _TABLE_KEYS, source)
    return _parse.in_table(source, AuditKeys, table.get("writer_key"),
                           table.get("writer_key_file"))
