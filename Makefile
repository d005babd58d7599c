# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/qkv train --config configs/demo-pystdlib.toml --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	QKV_DATA_DIR=$${QKV_DATA_DIR:-$(abspath ../shared/data)} $(BIN)/python -m pytest

docs: $(STAMP)  # the docs site in site/ (MkDocs + Material); a broken link or anchor fails it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

clean:
	rm -rf $(VENV) runs
