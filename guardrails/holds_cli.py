"""The 0.1 path of ``spanguard holds``; the command lives in :mod:`._holds_cli`."""

from spanguard.guardrails._holds_cli import register, run_decide, run_list, run_show

__all__ = ["register", "run_decide", "run_list", "run_show"]
