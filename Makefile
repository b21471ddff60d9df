# The two set-up commands the README opens with. Both work on a fresh machine.
PYTHON ?= python3
PIP    := $(PYTHON) -m pip

PY310  ?= $(shell command -v python3.10 || echo $(HOME)/.pyenv/versions/3.10.13/bin/python)
VENV310 ?= .venv310

.PHONY: demo test test-py310 install-dev lint typecheck pytest

# Main job: install, quantize the bundled demo model, then generate with the result.
demo:
	$(PIP) install -q -e '.[all]'
	amalia-edge quantize --out demo-artifacts
	amalia-edge generate demo-artifacts "Conta-me uma história sobre Lisboa." --max-tokens 48

install-dev:
	$(PIP) install -q -e '.[dev]'

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:
	$(PYTHON) -m mypy

pytest:
	$(PYTHON) -m pytest -q

# Tests: install everything, then lint, type-check and run the whole suite.
test: install-dev lint typecheck pytest

# The same suite under Python 3.10 (JetPack 6's Python), in its own virtual environment.
test-py310:
	$(PY310) -m venv $(VENV310)
	$(VENV310)/bin/python -m pip install -q -e '.[dev]'
	$(VENV310)/bin/python -m pytest -q
