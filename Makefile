# The two commands: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-all lint clean mergekit-venv chromium

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
	rm -rf $(VENV) .venv-mergekit build dist .pytest_cache
