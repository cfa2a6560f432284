# Every target installs what it needs first (into .venv), so a fresh clone needs only `make train` / `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-fast train bench results clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests experiments

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

train: $(STAMP)
	$(BIN)/python -m fer.train $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m fer.bench $(ARGS)

results: $(STAMP)
	$(BIN)/python -m fer.results $(ARGS)

clean:
	rm -rf .pytest_cache .cache outputs
