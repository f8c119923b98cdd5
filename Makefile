# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv and installs what it needs (Python packages, and Debian
# packages such as redis-server, and prometheus for promtool, via apt-get when
# they are missing).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

PHOENIX_VENV := .venv-phoenix
PHOENIX_VERSION := 20.26.1
PHOENIX_PORT ?= 6006

.PHONY: demo test test-matrix compat-venvs lint typecheck bench system-deps test-system-deps debian-packages phoenix clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian packages, as "command:package" pairs: the demo's, and the tests' on top.
DEMO_PACKAGES := redis-server:redis-server git:git
TEST_PACKAGES := $(DEMO_PACKAGES) promtool:prometheus

system-deps:
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(DEMO_PACKAGES)"

test-system-deps:
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(TEST_PACKAGES)"

debian-packages:
	@missing=""; \
	for pair in $(PACKAGES); do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends \
			$$missing; \
	fi

# Phoenix lives in its own venv: its dependency tree is large and must not
# constrain the versions spanguard is tested against.
$(PHOENIX_VENV)/bin/phoenix:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install --quiet --upgrade pip
	$(PHOENIX_VENV)/bin/pip install --quiet 'arize-phoenix==$(PHOENIX_VERSION)'

# Start a local Phoenix on 127.0.0.1:$(PHOENIX_PORT), send the demo's traces to it,
# and keep it running until Ctrl-C.
phoenix: $(STAMP) system-deps $(PHOENIX_VENV)/bin/phoenix
	@PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=$(PHOENIX_PORT) PHOENIX_WORKING_DIR=$(CURDIR)/.spanguard/phoenix \
		$(PHOENIX_VENV)/bin/phoenix serve > .phoenix.log 2>&1 & pid=$$!; \
	trap "kill $$pid" INT TERM EXIT; \
	for i in $$(seq 1 120); do curl -sf http://127.0.0.1:$(PHOENIX_PORT)/healthz >/dev/null && break; sleep 1; done; \
	OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$(PHOENIX_PORT)/v1/traces $(BIN)/python examples/demo.py; \
	echo "Phoenix: http://127.0.0.1:$(PHOENIX_PORT)  (log: .phoenix.log; Ctrl-C to stop)"; \
	wait $$pid

demo: $(STAMP) system-deps
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check spanguard plugins mcp_bridge guardrails tests benchmarks examples

# mypy cannot follow the package-dir mapping (plugins/ -> spanguard.plugins), so
# it checks the package as it installs: a plain (non-editable) copy in build/.
typecheck: $(STAMP)
	rm -rf build  # setuptools keeps stale copies of deleted modules in build/lib
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --target build/typecheck .
	cd build/typecheck && ../../$(BIN)/mypy --strict --config-file ../../pyproject.toml -p spanguard

# The core, plugin, MCP and compat suites on the default Python, then the smoke suite
# on every other supported Python that is installed (a notice for each absent one).
test: $(STAMP) test-system-deps lint typecheck $(PHOENIX_VENV)/bin/phoenix compat-venvs
	SPANGUARD_PHOENIX=$(CURDIR)/$(PHOENIX_VENV)/bin/phoenix $(BIN)/pytest -q
	$(MAKE) --no-print-directory test-matrix

# Environments with other pins and Pythons (mcp 1.x + langchain-mcp-adapters, mcp 2.x,
# no extras, Python 3.10/3.12/3.13), built in parallel by uv into .venv-compat/ once
# per checkout and reused until their requirements change (tests/compat/venvs.py).
compat-venvs: $(STAMP)
	$(BIN)/python -m tests.compat.venvs build all

test-matrix: $(STAMP) system-deps
	$(BIN)/python -m tests.compat.venvs matrix

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(PHOENIX_VENV) .venv-compat build .spanguard .pytest_cache .mypy_cache .phoenix.log
