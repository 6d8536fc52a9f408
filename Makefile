# `make install` builds .venv from scratch; `make test` runs the whole suite (tests/docker too,
# where a Docker engine answers: DOCKER_BUILD_FLAGS passes flags to its image builds).
PYTHON ?= python3
VENV ?= .venv
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: install test test-docker clean
install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	$(VENV)/bin/pip check

test:
	$(VENV)/bin/python -m pytest

# Only the container tests: build Dockerfile.train, train, kill, resume, serve (and TF Serving's half).
test-docker:
	$(VENV)/bin/python -m pytest -m docker tests/docker

clean:
	rm -rf $(VENV) work models .pytest_cache
