"""Shared fixtures: an in-memory span capture, an isolated SPANGUARD_HOME, a real Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spanguard import config as sg_config
from spanguard.testing import SpanCapture, capture


@pytest.fixture
def cap() -> Iterator[SpanCapture]:
    """A span capture; after the test, every span it saw start must have ended."""
    captured = capture()
    yield captured
    leaked = captured.unended()
    assert not leaked, f"spans started and never ended: {leaked}"


@pytest.fixture(autouse=True)
def spanguard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own SPANGUARD_HOME (and reviewer key directory, outside it)
    and no configure() left over from another."""
    home = tmp_path / "sg-home"
    monkeypatch.setenv("SPANGUARD_HOME", str(home))
    monkeypatch.setenv("SPANGUARD_REVIEWER_KEYS", str(tmp_path / "reviewer-keys"))
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_HEADERS", "SPANGUARD_POLICY", "SPANGUARD_PRICES",
                "SPANGUARD_HASH_KEY", "SPANGUARD_AUDIT_KEY_FILE",
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):
        monkeypatch.delenv(var, raising=False)
    previous = sg_config._current
    sg_config._current = None
    yield home
    sg_config._current = previous


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port (installed by `make test`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start within 10 s")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


