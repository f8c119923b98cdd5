# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv and installs what it needs (Python packages, and Debian
# packages such as redis-server via apt-get when they are missing).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v git >/dev/null || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/spanguard demo

lint: $(STAMP)
	$(BIN)/ruff check spanguard plugins mcp_bridge guardrails tests benchmarks examples

# mypy cannot follow the package-dir mapping (plugins/ -> spanguard.plugins), so
# it checks the package as it installs: a plain (non-editable) copy in build/.
typecheck: $(STAMP)
	rm -rf build/typecheck
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --target build/typecheck .
	cd build/typecheck && ../../$(BIN)/mypy --strict --config-file ../../pyproject.toml -p spanguard

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .spanguard .pytest_cache .mypy_cache
