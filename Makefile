# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest services services-stop bench bench-semantic clean

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

# The semantic cache's lookups at 100,000 entries, on the default store and in memory
# (about 5 min each, most of it filling the cache); RESULTS.md `cache-semantic-sqlite`,
# `cache-semantic`.
bench-semantic: $(STAMP)
	$(BIN)/python -m benchmarks.cache_bench --entries 100000 --dim 384 --samples 2000 --backend sqlite
	$(BIN)/python -m benchmarks.cache_bench --entries 100000 --dim 384 --samples 2000 --backend memory

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
