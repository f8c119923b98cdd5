"""configure(), the exporters, the local store and the `spanguard traces` CLI."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import spanguard
from spanguard import attributes as attrs
from spanguard.cli import main
from spanguard.errors import ConfigError
from spanguard.exporters.otlp import langfuse_target, parse_headers, phoenix_target
from spanguard.spantree import SpanTree
from tests.conftest import free_port


def _emit_run(handle: spanguard.SpanguardHandle, agent: str = "support") -> str:
    tree = SpanTree(handle.tracer_provider.get_tracer("test"))
    root = tree.start("root", None, attrs.agent_span_name(agent), attrs.agent_attributes(agent))
    llm = tree.start("llm", "root", attrs.chat_span_name("gpt-4o"),
                     attrs.model_attributes("gpt-4o"))
    llm.span.set_attributes(attrs.usage_attributes(1000, 100))
    cost = handle.prices.cost("gpt-4o", 1000, 100)
    llm.span.set_attributes(attrs.cost_attributes(cost))
    tree.add_usage(llm, 1000, 100, cost)
    tree.end("llm")
    tree.start("tool", "root", attrs.tool_span_name("search"), attrs.tool_attributes("search"))
    tree.end("tool", error=RuntimeError("index offline"))
    tree.end("root")
    return format(root.span.get_span_context().trace_id, "032x")


def test_default_configure_writes_the_local_store_only(spanguard_home: Path) -> None:
    before = trace.get_tracer_provider()
    handle = spanguard.configure()
    assert trace.get_tracer_provider() is before  # the global provider is left alone
    assert handle.store is not None and handle.store.path == spanguard_home / "traces.db"
    assert [e.destination for e in handle.exporters] == [f"local store {handle.store.path}"]
    assert handle.problems == []
    handle.shutdown()


def test_store_round_trip_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    handle = spanguard.configure()
    trace_id = _emit_run(handle)
    handle.shutdown()

    assert main(["traces", "list", "--json"]) == 0
    (summary,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert summary["trace_id"] == trace_id
    assert summary["root_name"] == "invoke_agent support"
    assert summary["span_count"] == 3 and summary["error_count"] == 1
    assert summary["input_tokens"] == 1000 and summary["cost_usd"] == pytest.approx(0.0035)

    assert main(["traces", "show", trace_id[:10], "--json"]) == 0
    spans = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    required = {"trace_id", "span_id", "parent_span_id", "name", "start_time", "end_time",
                "status", "attributes"}
    assert all(required <= set(span) for span in spans)
    by_name = {span["name"]: span for span in spans}
    root = by_name["invoke_agent support"]
    assert root["parent_span_id"] is None
    assert by_name["chat gpt-4o"]["parent_span_id"] == root["span_id"]
    assert by_name["execute_tool search"]["status"] == "ERROR"

    assert main(["traces", "show", trace_id]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("invoke_agent support [AGENT]")
    assert "└─ execute_tool search [TOOL]" in text and "ERROR(RuntimeError)" in text
    assert "tokens 1000→100" in text


def test_unknown_trace_id_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    spanguard.configure().shutdown()
    assert main(["traces", "show", "deadbeef"]) == 3
    assert "no trace 'deadbeef'" in capsys.readouterr().err


def test_the_installed_command_runs(spanguard_home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "spanguard", "traces", "list"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "no traces yet" in result.stdout


def test_corrupt_store_is_reported_and_the_agent_keeps_running(
        spanguard_home: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    spanguard_home.mkdir(parents=True)
    (spanguard_home / "traces.db").write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="spanguard"):
        handle = spanguard.configure()
    assert handle.store is None
    assert any("traces.db" in p and "corrupt" in p for p in handle.problems)
    assert "traces.db" in caplog.text
    _emit_run(handle)  # telemetry is the only thing affected
    handle.shutdown()
    assert main(["traces", "list"]) == 4
    assert "move it aside" in capsys.readouterr().err


def test_unwritable_home_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("SPANGUARD_HOME", str(blocker / "home"))
    handle = spanguard.configure()
    assert handle.store is None
    assert any(str(blocker / "home") in p for p in handle.problems)
    with pytest.raises(spanguard.StoreError):
        spanguard.configure(strict=True)


def test_malformed_otlp_headers_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization")
    handle = spanguard.configure()
    assert any(p.startswith("OTEL_EXPORTER_OTLP_HEADERS: malformed") for p in handle.problems)
    assert handle.store is not None  # the rest of the configuration still works
    handle.shutdown()
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_HEADERS"):
        spanguard.configure(strict=True)


def test_headers_parse_url_encoded_values() -> None:
    assert parse_headers("Authorization=Bearer%20abc, x-team=ml") == {
        "authorization": "Bearer abc", "x-team": "ml"}


class _Exploding(SpanExporter):
    calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise ConnectionError("collector is down")

    def shutdown(self) -> None:
        return None


def test_failing_exporter_never_reaches_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    exploding = _Exploding()
    with caplog.at_level(logging.WARNING, logger="spanguard"):
        handle = spanguard.configure(exporters=[exploding])
        for _ in range(3):
            _emit_run(handle)
            handle.force_flush()
        handle.shutdown()
    assert exploding.calls >= 3
    assert handle.dropped_spans == 9
    warnings = [r for r in caplog.records if "collector is down" in r.getMessage()]
    assert len(warnings) == 2  # once when it first fails, once in the shutdown summary
    assert handle.store is not None


def test_unreachable_otlp_endpoint_drops_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    handle = spanguard.configure(otlp_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces")
    _emit_run(handle)
    handle.shutdown()
    assert handle.dropped_spans == 3
    assert handle.store is not None


def test_presets_build_the_documented_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHOENIX_COLLECTOR_ENDPOINT", raising=False)
    assert phoenix_target().endpoint == "http://127.0.0.1:6006/v1/traces"
    assert phoenix_target("http://127.0.0.1:7000").endpoint == "http://127.0.0.1:7000/v1/traces"
    target = langfuse_target("http://127.0.0.1:3000/", "pk-lf-1", "sk-lf-2")
    assert target.endpoint == "http://127.0.0.1:3000/api/public/otel/v1/traces"
    scheme, token = target.headers["authorization"].split()
    assert scheme == "Basic" and base64.b64decode(token) == b"pk-lf-1:sk-lf-2"
    monkeypatch.delenv("LANGFUSE_PUBLIC_KEY", raising=False)
    monkeypatch.delenv("LANGFUSE_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="LANGFUSE_PUBLIC_KEY"):
        langfuse_target("http://127.0.0.1:3000")


def test_console_exporter_prints_the_finished_tree(capsys: pytest.CaptureFixture[str]) -> None:
    handle = spanguard.configure(local_store=False, console=True)
    _emit_run(handle)
    handle.shutdown()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("invoke_agent support")
    assert lines[1].startswith("├─ chat gpt-4o") and lines[2].startswith("└─ execute_tool")


def test_set_global_is_opt_in() -> None:
    # In a subprocess: OpenTelemetry allows setting the global provider only once.
    code = (
        "import spanguard\n"
        "from opentelemetry import trace\n"
        "h = spanguard.configure(local_store=False)\n"
        "assert trace.get_tracer_provider() is not h.tracer_provider\n"
        "g = spanguard.configure(local_store=False, set_global=True)\n"
        "assert trace.get_tracer_provider() is g.tracer_provider\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_a_closed_pipe_is_not_an_error(spanguard_home: Path) -> None:
    handle = spanguard.configure()
    for _ in range(700):  # ~85 KB of listing: more than a pipe buffer holds
        _emit_run(handle)
    handle.shutdown()
    result = subprocess.run(f"{sys.executable} -m spanguard traces list --limit 700 | head -1",
                            shell=True, capture_output=True, text=True, check=False)
    assert result.stdout.startswith("TRACE ID")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
