"""spanguard installed without extras, on the oldest supported Python on the machine
(3.10 where it is installed): the core imports and works, and every part that needs an
optional dependency says which extra brings it.

The environment holds nothing but spanguard and its declared dependencies (no pytest:
on 3.10 pytest brings ``tomli``, which would hide a missing declaration), so each case
is a fresh interpreter whose output is read here.
"""

from __future__ import annotations

import pytest

from tests.compat.interpreters import default_interpreter, find
from tests.compat.venvs import ROOT, run_inside


def _run(code: str) -> tuple[int, str]:
    done = run_inside("bare", "-c", code, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_the_environment_is_the_oldest_python_present() -> None:
    code, out = _run("import sys; print('%d.%d' % sys.version_info[:2])")
    assert code == 0, out
    expected = "3.10" if find("3.10") is not None else default_interpreter().minor
    assert out.strip() == expected


def test_the_core_imports_configures_and_reads_a_policy_file() -> None:
    code, out = _run(
        "import spanguard, tempfile\n"
        "from spanguard.guardrails import load_policy\n"
        "handle = spanguard.configure(home=tempfile.mkdtemp())\n"
        f"policy = load_policy({str(ROOT / 'examples' / 'policy.toml')!r})\n"
        "handle.shutdown()\n"
        "print('ok', policy.name)\n")
    assert code == 0 and out.strip().endswith("ok support-prod"), out


def test_correlation_needs_no_mcp_at_all() -> None:
    code, out = _run(
        "import sys\n"
        "from spanguard.hashing import KeyedHasher\n"
        "from spanguard.mcp_bridge import correlation, outgoing_meta\n"
        "with correlation(tenant_id='acme', hasher=KeyedHasher(b'k' * 16)):\n"
        "    meta = outgoing_meta()\n"
        "print('baggage' in meta, 'mcp' in sys.modules)\n")
    assert code == 0 and out.strip() == "True False", out


@pytest.mark.parametrize(("statement", "extra", "missing"), [
    ("import spanguard.plugins.langchain", "langgraph", "langchain_core"),
    ("import spanguard.plugins.resilient", "langgraph", "langchain_core"),
    ("import spanguard.plugins.langgraph_holds", "langgraph", "langchain"),
    ("import spanguard.plugins.llama_index", "llama-index", "llama_index_instrumentation"),
    ("import spanguard.plugins.mcp_adapters", "mcp-adapters", "langchain_mcp_adapters"),
    ("from spanguard.mcp_bridge import McpProxy", "mcp", "orjson"),
    ("from spanguard.mcp_bridge import ToolGate", "mcp", "anyio"),
    ("from spanguard.mcp_bridge import instrument_server; instrument_server(object())",
     "mcp", "mcp"),
    ("import spanguard.mcp_bridge.server", "mcp", "mcp"),
])
def test_a_missing_extra_is_named_with_the_command_to_install_it(
        statement: str, extra: str, missing: str) -> None:
    code, out = _run(
        "from spanguard.extras import MissingExtra\n"
        "try:\n"
        f"    {statement}\n"
        "except MissingExtra as exc:\n"
        "    print(exc.extra, exc.name)\n"
        "    print(exc)\n")
    assert code == 0, out
    first, message = out.strip().splitlines()[-2:]
    assert first == f"{extra} {missing}", out
    assert message.endswith(f"pip install 'spanguard[{extra}]'"), message


def test_spanguard_mcp_wrap_names_the_mcp_extra() -> None:
    done = run_inside("bare", "-m", "spanguard", "mcp", "wrap", "--", "true", timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install 'spanguard[mcp]'" in done.stderr, done.stderr
    assert "[all]" not in done.stderr
