"""mcp 1.x and 2.x, each in its own environment (``tests/compat/venvs.py``): a LangGraph
agent calling mcp-server-time through ``spanguard mcp wrap`` is one trace from the
agent's root to the proxy's server span, with the run's hashed ids as baggage.

The checks themselves are ``tests/compat/inside/check_mcp*.py``; each environment runs
its file with its own pytest, so the two SDK majors never share a process.
"""

from __future__ import annotations

import re

from tests.compat.venvs import run_inside


def _passed(check: str, environment: str) -> int:
    done = run_inside(environment, "-m", "pytest", "-q", "-p", "no:cacheprovider", check)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
    summary = re.search(r"(\d+) passed", done.stdout.strip().splitlines()[-1])
    assert summary is not None, done.stdout[-2000:]
    return int(summary.group(1))


def test_mcp1_with_langchain_mcp_adapters_through_wrap_is_one_trace() -> None:
    # The agent story, the interceptor's absence, propagate_context, the class hook
    # under concurrency, instrument_server on 1.x (guards, read-back verification),
    # the protocol constants, and the adapters' own ClientSession.
    assert _passed("tests/compat/inside/check_mcp1.py", "mcp1") == 9


def test_mcp2_sdk_client_through_wrap_is_one_trace() -> None:
    assert _passed("tests/compat/inside/check_mcp2.py", "mcp2") == 3
