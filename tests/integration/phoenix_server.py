"""A real Arize Phoenix server on a free loopback port, for integration tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import free_port, repo_root


def phoenix_binary() -> str | None:
    candidates = [os.environ.get("SPANGUARD_PHOENIX"),
                  str(repo_root() / ".venv-phoenix" / "bin" / "phoenix"),
                  shutil.which("phoenix")]
    return next((c for c in candidates if c and Path(c).exists()), None)


@contextmanager
def running_phoenix(workdir: Path) -> Iterator[str]:
    """Yield Phoenix's base URL; the server is stopped on exit."""
    binary = phoenix_binary()
    if binary is None:
        raise RuntimeError("Phoenix is not installed: `make test` installs it into .venv-phoenix")
    port = free_port()
    env = dict(os.environ, PHOENIX_HOST="127.0.0.1", PHOENIX_PORT=str(port),
               PHOENIX_GRPC_PORT=str(free_port()), PHOENIX_WORKING_DIR=str(workdir))
    log = (workdir / "phoenix.log").open("w")
    proc = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Phoenix exited: {(workdir / 'phoenix.log').read_text()}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Phoenix did not become healthy within 180 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def phoenix_spans(base: str, project: str = "default", expected: int = 1,
                  timeout: float = 30.0) -> list[dict[str, Any]]:
    """All spans of a project through Phoenix's REST API, waiting for ingestion."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = []
        cursor = None
        while True:
            url = f"{base}/v1/projects/{project}/spans?limit=1000"
            if cursor:
                url += f"&cursor={cursor}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    page = json.load(response)
            except OSError:
                break
            spans.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if len(spans) >= expected:
            return spans
        time.sleep(0.5)
    return spans


def phoenix_get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=5) as response:
        return json.load(response)


def phoenix_traces(base: str, project: str = "default") -> dict[str, dict[str, Any]]:
    """Every trace of a project by trace id, with Phoenix's own token totals."""
    traces: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        path = f"/v1/projects/{project}/traces?limit=1000"
        if cursor:
            path += f"&cursor={cursor}"
        page = phoenix_get(base, path)
        traces.update({t["trace_id"]: t for t in page["data"]})
        cursor = page.get("next_cursor")
        if not cursor:
            return traces
