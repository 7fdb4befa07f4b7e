# One command runner. Every target bootstraps the virtual environment from uv.lock first,
# so a fresh clone needs only python3 (>= 3.11) on the PATH.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never

.PHONY: venv browser demo test lint bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

venv: $(VENV)/.synced

demo: venv
	$(VENV)/bin/propvisor demo $(ARGS)

# Debian's chromium, for the risk page's browser test (Playwright drives /usr/bin/chromium;
# it never downloads a browser).
browser:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

test: venv browser
	$(VENV)/bin/pytest $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Short versions of every load-test scenario (python -m loadtests lists them); JSON in var/bench.
bench: venv
	$(VENV)/bin/python -m loadtests --bench

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
