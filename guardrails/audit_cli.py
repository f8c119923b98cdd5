"""The 0.1 path of ``spanguard audit``; the command lives in :mod:`._audit_cli`."""

from spanguard.guardrails._audit_cli import register, run_list, run_verify

__all__ = ["register", "run_list", "run_verify"]
