# make run: start the daemon with the development config; make test: run the whole suite;
# make check: lint, type-check and run the unit tests (well under a minute).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The project is installed as a real (non-editable) package, so twistd finds the
# plugin in site-packages/twisted/plugins exactly as it will in production.
SOURCES := setup.py pyproject.toml README.rst $(shell find s3orchestrator twisted -name '*.py' -o -name '*.sql')

.PHONY: run test check bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null \
		|| { echo "make: $(PYTHON) cannot make a venv: install python3-venv (sudo apt-get install python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet .
	touch $@

$(VENV)/.installed-test: $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	mkdir -p var
	$(BIN)/twistd --nodaemon --pidfile= s3orchestrator --config etc/s3orchestrator.dev.toml

# The Debian packages the tests drive (aws cli v2, rclone, s3cmd) are installed first, or make test stops
# with one line saying what to install. The metadata tests and every integration test that starts a
# daemon also run on PostgreSQL when S3O_TEST_POSTGRES_DSN names a server they may create databases on
# (else those variants skip). TEST_WORKERS processes share the tests (pytest-xdist) a module at a time,
# so that a module-scoped daemon starts once (per engine), not once per worker.
TEST_WORKERS ?= 2
test: export S3O_TEST_POSTGRES_DSN := $(S3O_TEST_POSTGRES_DSN)
test:
	bash tests/tools/install-clients $(PYTHON)
	$(MAKE) $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests

check: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest tests/unit -q

# bench/scale_out.py needs a PostgreSQL server (S3O_BENCH_POSTGRES_DSN or S3O_TEST_POSTGRES_DSN,
# default postgresql://postgres@127.0.0.1:5432/postgres) and haproxy.
bench: $(VENV)/.installed-test
	$(BIN)/python bench/roundtrip.py
	$(BIN)/python bench/upstream_ratio.py
	$(BIN)/python bench/floor.py
	$(BIN)/python bench/checksums.py
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/scale_out.py
	$(BIN)/python bench/movement.py

clean:
	rm -rf $(VENV) var build *.egg-info twisted/plugins/dropin.cache
