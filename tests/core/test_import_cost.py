"""`import spanguard` and `spanguard traces list` load only what they use.

Checked in fresh interpreters through ``sys.modules``, not with a clock: what a
module imports is deterministic, its timing is not (benchmarks/import_time.py
measures the time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import spanguard

HEAVY_FOR_A_BARE_IMPORT = ("langchain_core", "langgraph", "llama_index", "mcp", "sqlite3",
                           "opentelemetry.exporter.otlp", "opentelemetry.sdk.metrics")


def loaded_after(code: str, home: Path) -> set[str]:
    """Modules loaded once ``code`` has run in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, SPANGUARD_HOME=str(home)), timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def under(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


def test_a_bare_import_loads_no_framework_store_or_exporter(spanguard_home: Path) -> None:
    assert under(loaded_after("import spanguard", spanguard_home),
                 HEAVY_FOR_A_BARE_IMPORT) == set()


def test_traces_list_loads_neither_the_sdk_nor_a_framework(spanguard_home: Path) -> None:
    code = "from spanguard.cli import main\nmain(['traces', 'list'])"
    loaded = loaded_after(code, spanguard_home)
    assert "sqlite3" in loaded  # it did read the store
    assert under(loaded, ("opentelemetry.sdk", "opentelemetry.exporter", "langchain_core",
                          "llama_index", "mcp", "spanguard.guardrails")) == set()


def test_configure_without_otlp_loads_no_metrics_sdk_or_exporter(spanguard_home: Path) -> None:
    loaded = loaded_after("import spanguard\nspanguard.configure().shutdown()", spanguard_home)
    assert "opentelemetry.sdk.trace" in loaded
    assert under(loaded, ("opentelemetry.sdk.metrics", "opentelemetry.exporter")) == set()


@pytest.mark.parametrize("name", sorted(spanguard.__all__))
def test_every_public_name_resolves_and_is_listed(name: str) -> None:
    value = getattr(spanguard, name)
    assert value is not None
    assert name in dir(spanguard)
    if not name.startswith("_"):
        assert getattr(value, "__module__", "").startswith("spanguard.")


def test_star_import_and_from_import_give_the_defining_objects() -> None:
    from spanguard.config import configure
    from spanguard.sampling import TailSampler

    namespace: dict[str, object] = {}
    exec("from spanguard import *", namespace)
    assert namespace["configure"] is configure
    from spanguard import TailSampler as imported
    assert imported is TailSampler


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'confgure'"):
        spanguard.confgure  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError):
        exec("from spanguard import confgure", {})
