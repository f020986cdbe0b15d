# make run: start the daemon with the development config; make test: run the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: venv
	mkdir -p var
	$(BIN)/twistd --nodaemon --pidfile= s3orchestrator --config etc/s3orchestrator.dev.toml

test: venv
	$(BIN)/python -m pytest tests

bench: venv
	$(BIN)/python bench/roundtrip.py

clean:
	rm -rf $(VENV) var build *.egg-info twisted/plugins/dropin.cache
