# Two commands do all set-up on a fresh machine:
#   make suite   -> creates .venv if missing, installs, runs `python run_suite.py --all`
#   make test    -> creates .venv if missing, installs, runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Real data: ../shared/data (full MNIST) when it exists, unless the caller set EQPROP_DATA.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin EQPROP_DATA), undefined)
ifneq ($(wildcard $(SHARED_DATA)/mnist),)
export EQPROP_DATA := $(SHARED_DATA)
endif
endif
SUITE_ARGS ?=

.PHONY: suite test bench install clean-venv
install: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

suite: $(STAMP)
	$(BIN)/python run_suite.py --all $(SUITE_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_epoch.py

clean-venv:
	rm -rf $(VENV)
