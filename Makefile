# `make demo` trains a small model; `make test` runs the whole test suite, `make test-fast` the unit and parity
# tests alone. Each creates .venv on first use.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The corpora some tests read. They come from $QKV_DATA_DIR when you set it, else from ../shared/data when there
# is one (CI's checkout has it), else from the cache ($QKV_CACHE_DIR or ~/.cache/qkv/data), where `make test`
# downloads them once with `qkv data get` (sha256-checked; $QKV_DATA_URL names a mirror instead of upstream).
CORPORA := tinyshakespeare multi30k fsdd humaneval
ifeq ($(QKV_DATA_DIR),)
  ifneq ($(wildcard ../shared/data/.),)
    export QKV_DATA_DIR := $(abspath ../shared/data)
  endif
endif

.PHONY: demo test test-fast test-data lint clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	@run=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	$(BIN)/qkv train --preset demo-pystdlib --out $$run && \
	echo "next: $(BIN)/qkv report $$run --eval   # the report card ($$run/report.html) with the run's own evaluation" && \
	echo "      $(BIN)/qkv serve $$run          # the playground: http://127.0.0.1:8000/"

test-data: $(STAMP)
	$(BIN)/qkv data get $(CORPORA)

test: test-data
	$(BIN)/python -m pytest

# The unit and parity tests without the tiny training runs (marked slow): 1,120 tests in 75 s wall, data step
# included, on 2 cores shared with another training job (load average 2.5-3.0; qkv 0.2.0, 2026-12-07).
test-fast: test-data
	$(BIN)/python -m pytest tests/unit tests/parity -m "not slow"

docs: $(STAMP)  # the docs site in site/ (MkDocs + Material); a broken link or anchor fails it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) runs
