# The two set-up commands the README opens with. Both work on a fresh machine.
PYTHON ?= python3
PIP    := $(PYTHON) -m pip

# A real 3.10 interpreter (pyenv's shim for python3.10 fails unless 3.10 is selected).
PY310  ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python /usr/bin/python3.10 /usr/local/bin/python3.10))
VENV310 ?= .venv310

# llama-cpp-python compiles llama.cpp. On x86-64 build its CPU backend for AVX2 rather than
# GGML_NATIVE: on CPUs with AMX (Intel Sapphire Rapids and later, CI's machine among them) a
# native build turns on ggml's AMX matmul, which crashes (SIGSEGV in ggml_backend_amx_mul_mat)
# on small models' Q8_0 / Q4_K_M tensors. Set CMAKE_ARGS yourself to override.
ifeq ($(shell uname -m),x86_64)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif

.PHONY: demo test test-py310 install-dev chromium lint typecheck pytest llama-convert

# llama.cpp's own converter, the reference the parity tests (pytest -m parity) compare against:
# convert_hf_to_gguf.py with its conversion/ package and gguf-py, taken from the
# llama-cpp-python sdist of the version we run. Extracted once into a git-ignored cache.
LLAMA_CPP_PY_VERSION ?= 0.3.36
LLAMA_CONVERT_DIR ?= .cache/llama-convert

# Main job: install, quantize the bundled demo model, then generate with the result.
demo:
	$(PIP) install -q -e '.[all]'
	amalia-edge quantize --out demo-artifacts
	amalia-edge generate demo-artifacts "Conta-me uma história sobre Lisboa." --max-tokens 48

install-dev:
	$(PIP) install -q -e '.[dev,parity]'
	$(MAKE) --no-print-directory llama-convert

# Idempotent: does nothing once $(LLAMA_CONVERT_DIR)/VERSION names the wanted version.
llama-convert:
	@set -e; dir=$(LLAMA_CONVERT_DIR); v=$(LLAMA_CPP_PY_VERSION); \
	if [ "$$(cat $$dir/VERSION 2>/dev/null)" = "$$v" ]; then exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PIP) download -q --no-deps --no-binary :all: llama-cpp-python==$$v -d $$tmp; \
	src=llama_cpp_python-$$v/vendor/llama.cpp; \
	tar xzf $$tmp/llama_cpp_python-$$v.tar.gz -C $$tmp \
	  $$src/convert_hf_to_gguf.py $$src/conversion $$src/gguf-py $$src/LICENSE; \
	echo $$v > $$tmp/$$src/VERSION; \
	rm -rf $$dir.new; mkdir -p $$(dirname $$dir); mv $$tmp/$$src $$dir.new; \
	rm -rf $$dir; mv $$dir.new $$dir; \
	echo "llama-convert: llama.cpp's convert_hf_to_gguf.py (llama-cpp-python $$v) in $$dir"

# Debian's chromium for the chat-page test (Playwright drives it; no `playwright install`).
# Skipped when /usr/bin/chromium exists; without apt or root the browser test skips itself.
chromium:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "chromium: no apt-get; the browser test will be skipped"; exit 0; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium \
	  || echo "chromium: install failed; the browser test will be skipped"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:
	$(PYTHON) -m mypy

pytest:
	$(PYTHON) -m pytest -q

# Tests: install everything, then lint, type-check and run the whole suite (3.11, then 3.10).
test: install-dev chromium lint typecheck pytest test-py310

# The same suite under Python 3.10 (JetPack 6's Python), in its own virtual environment.
# Skipped, saying so, where no Python 3.10 interpreter exists. The parity tests (pytest -m
# parity: llama.cpp's converter and transformers, which need torch) run under 3.11 only: no
# CPU-only torch for 3.10 is on the package index here, and PyPI's pulls gigabytes of CUDA.
test-py310:
	@if [ -z "$(PY310)" ]; then echo "test-py310: no Python 3.10 interpreter found; skipped"; exit 0; fi; \
	set -e; \
	[ -x $(VENV310)/bin/python ] || $(PY310) -m venv $(VENV310); \
	$(VENV310)/bin/python -m pip install -q -e '.[dev]'; \
	echo "test-py310: deselecting the parity tests (-m 'not parity'); the 3.11 run has them"; \
	$(VENV310)/bin/python -m pytest -q -m "not parity"
