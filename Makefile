# `make demo` and `make test` work on a fresh machine with nothing but Python 3.10+: they build their own venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench bench-judgeval clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m judgeval_async.demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

check: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/check

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# The judgeval SDK from PyPI as a third benchmark subject, in its own venv (its dependencies may conflict with ours).
# The benchmarks use it whenever it exists; they only ever point it at the local server on 127.0.0.1.
JUDGEVAL_VENV := .venv-judgeval
bench-judgeval: $(JUDGEVAL_VENV)/.installed

$(JUDGEVAL_VENV)/.installed:
	$(PYTHON) -m venv $(JUDGEVAL_VENV)
	$(JUDGEVAL_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(JUDGEVAL_VENV)/bin/python -m pip install --quiet judgeval starlette uvicorn
	touch $@

clean:
	rm -rf $(VENV) $(JUDGEVAL_VENV) .mypy_cache .pytest_cache .ruff_cache
