"""Policy files and code build the same budget objects; bad files are refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from spanguard.errors import ConfigError
from spanguard.guardrails import (
    LoopBudget,
    Policy,
    StoreConfig,
    ToolLoop,
    WindowBudget,
    load_policy,
)

FULL = """
name = "agents"

[loop_budget]
max_input_tokens = 200000
max_total_tokens = 260000
max_cost_usd = 2.5
max_model_calls = 40
max_tool_calls = 60
stop_on_projected_breach = true
margin_sigmas = 4
margin_fraction = 0.1

[window_budgets.tenant_daily]
scope = "tenant"
window = "day"
mode = "calendar"
timezone = "Europe/London"
max_total_tokens = 5000000
max_cost_usd = 50.0

[window_budgets.session_hourly]
scope = "session"
window = "hour"
max_model_calls = 100

[tool_loop]
identical_calls = 3
stalled_steps = 5

[store]
url = "redis://127.0.0.1:6379/2"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, "utf-8")
    return path


def test_toml_and_code_build_the_same_policy(tmp_path: Path) -> None:
    from_file = Policy.from_file(write(tmp_path, FULL))
    in_code = Policy(
        name="agents",
        loop_budget=LoopBudget(max_input_tokens=200_000, max_total_tokens=260_000,
                               max_cost_usd=2.5, max_model_calls=40, max_tool_calls=60,
                               stop_on_projected_breach=True, margin_sigmas=4.0,
                               margin_fraction=0.1),
        window_budgets=(
            WindowBudget("tenant_daily", "tenant", "day", "calendar",
                         max_total_tokens=5_000_000, max_cost_usd=50.0,
                         timezone="Europe/London"),
            WindowBudget("session_hourly", "session", "hour", max_model_calls=100)),
        tool_loop=ToolLoop(identical_calls=3, stalled_steps=5),
        store=StoreConfig("redis://127.0.0.1:6379/2"))
    assert from_file == in_code


def test_minimal_loop_budget_table(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "[loop_budget]\nmax_input_tokens = 200000\n"))
    assert policy is not None and policy.loop_budget == LoopBudget(max_input_tokens=200_000)
    assert policy.window_budgets == () and policy.tool_loop is None and policy.store is None


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("[loop_budget]\nmax_input_tokenz = 5\n", "[loop_budget]", "unknown key 'max_input_tokenz'"),
    ("[loop_budget]\nmax_input_tokens = -1\n", "[loop_budget]",
     "max_input_tokens must not be negative"),
    ("[loop_budget]\nmax_input_tokens = \"lots\"\n", "[loop_budget]",
     "max_input_tokens must be an integer, got str"),
    ("[loop_budget]\nmax_model_calls = 2.5\n", "[loop_budget]",
     "max_model_calls must be an integer, got float"),
    ("[loop_budget]\nmax_model_calls = true\n", "[loop_budget]",
     "max_model_calls must be an integer, got bool"),
    ("[loop_budget]\nmax_cost_usd = -0.5\n", "[loop_budget]", "max_cost_usd must not be negative"),
    ("[loop_budget]\nstop_on_projected_breach = 1\n", "[loop_budget]",
     "stop_on_projected_breach must be true or false"),
    ("loop_budget = 5\n", "policy.toml", "[loop_budget] must be a table"),
    ("[loop_budgets]\nmax_input_tokens = 5\n", "policy.toml", "unknown key 'loop_budgets'"),
    ("[window_budgets.t]\nwindow = \"day\"\nmax_model_calls = 5\n", "[window_budgets].t",
     "scope is required"),
    ("[window_budgets.t]\nscope = \"org\"\nmax_model_calls = 5\n", "[window_budgets].t",
     "scope must be one of session, tenant, user"),
    ("[window_budgets.t]\nscope = \"user\"\nwindow = \"week\"\nmax_model_calls = 5\n",
     "[window_budgets].t", "window must be one of day, hour"),
    ("[window_budgets.t]\nscope = \"user\"\n", "[window_budgets].t", "no limit set"),
    ("[window_budgets.t]\nscope = \"user\"\nmax_cost_usd = -1\n", "[window_budgets].t",
     "max_cost_usd must not be negative"),
    ("[window_budgets.t]\nscope = \"user\"\nmode = \"calendar\"\ntimezone = \"Mars/Base\"\n"
     "max_model_calls = 5\n", "[window_budgets].t", "unknown timezone 'Mars/Base'"),
    ("[window_budgets.t]\nscope = \"user\"\nmax_model_calls = 5\nburst = 2\n",
     "[window_budgets].t", "unknown key 'burst'"),
    ("[window_budgets]\nt = 5\n", "[window_budgets].t", "must be a table"),
    ("[tool_loop]\nidentical_calls = 1\n", "[tool_loop]", "identical_calls must be at least 2"),
    ("[tool_loop]\nrepeats = 3\n", "[tool_loop]", "unknown key 'repeats'"),
    ("[store]\nurl = \"mysql://db\"\n", "[store] url", "unknown store scheme 'mysql'"),
    ("[store]\nurl = \"sqlite://relative.db\"\n", "[store] url",
     "sqlite url needs an absolute path"),
    ("[store]\n", "[store]", "url is required"),
])
def test_bad_policy_files_name_the_key_and_the_reason(tmp_path: Path, text: str, where: str,
                                                     reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        Policy.from_file(path)
    message = str(refused.value)
    assert str(path) in message and where in message and reason in message, message


def test_code_built_budgets_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="max_total_tokens must not be negative"):
        LoopBudget(max_total_tokens=-5)
    with pytest.raises(ConfigError, match="no limit set"):
        WindowBudget("w", "tenant")
    with pytest.raises(ConfigError, match="unknown store scheme"):
        StoreConfig("ftp://x")
