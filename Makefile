# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest services services-stop bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

test: $(STAMP) lint typecheck
	bash scripts/test-services.sh start
	status=0; $(BIN)/python -m pytest -q -p no:cacheprovider || status=$$?; \
	bash scripts/test-services.sh stop; exit $$status

lint: $(STAMP)
	$(BIN)/ruff format --check byok_middleware tests examples benchmarks
	$(BIN)/ruff check byok_middleware tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

services: $(STAMP)
	bash scripts/test-services.sh start

services-stop:
	bash scripts/test-services.sh stop

bench: $(STAMP)
	@command -v wrk >/dev/null || { echo 'make bench needs wrk: apt-get install -y wrk'; exit 1; }
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
