"""The distribution installs plugins/, mcp_bridge/, guardrails/ under `spanguard` only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import repo_root


def test_regular_install_maps_the_three_folders(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(repo_root())],
        check=True, capture_output=True)
    installed = {path.name for path in target.iterdir()}
    assert "spanguard" in installed
    assert not {"plugins", "guardrails", "mcp_bridge"} & installed
    code = (
        "import spanguard.plugins, spanguard.guardrails, spanguard.mcp_bridge, spanguard;"
        "from spanguard.guardrails import Policy;"
        "print(spanguard.plugins.__file__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                            cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(target / "spanguard" / "plugins"))
    assert (target / "spanguard" / "data" / "prices.toml").exists()


def test_editable_install_imports_the_mapped_packages() -> None:
    code = ("import spanguard.plugins, spanguard.guardrails, spanguard.mcp_bridge;"
            "print(spanguard.guardrails.__file__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd="/", check=False)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == repo_root() / "guardrails" / "__init__.py"
