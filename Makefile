# `make install` builds .venv from scratch; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: install test lint clean
install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	$(VENV)/bin/pip check

test:
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) work models .pytest_cache
