# Two commands set up and test everything: `make install`, then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.toml

.PHONY: install postgres-binaries test lint format typecheck run demo devserver soak bench bench-memory clean

install: $(BIN)/mchat-bot postgres-binaries

$(BIN)/mchat-bot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The tests start a throwaway PostgreSQL cluster (tests/support/postgres.py) with initdb and pg_ctl:
# installed with apt-get only where none is found (as root, e.g. CI), without Debian's default
# cluster (the tests make their own; nothing listens on 5432 because of this).
postgres-binaries:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  mkdir -p /etc/postgresql-common; \
	  [ -e /etc/postgresql-common/createcluster.conf ] || \
	    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
	  echo "note: no initdb found; install PostgreSQL (apt-get install postgresql) or its tests are skipped"; \
	fi

# The suite runs on TEST_WORKERS pytest-xdist workers (`make test TEST_WORKERS=0` for one process).
# Most of its time is e2e tests waiting on a daemon subprocess, so more workers than cores still
# helps; each test file stays on one worker (`--dist loadfile`) as its tests share one daemon and
# dev server, and each worker starts its own PostgreSQL cluster (tests/support/fixtures.py).
TEST_WORKERS ?= 3

test: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check mchat_bot tests bench
	$(BIN)/ruff format --check mchat_bot tests bench
	$(BIN)/mypy mchat_bot
	$(BIN)/lint-imports --no-logo

format: install
	$(BIN)/ruff format mchat_bot tests bench
	$(BIN)/ruff check --fix mchat_bot tests bench

run: install
	$(BIN)/mchat-bot run --config $(CONFIG)

devserver: install
	$(BIN)/mchat-bot devserver --port 8065 --bot-token devbot-token-not-secret --seed-file data/devserver-seed.json

demo: install
	$(BIN)/mchat-bot demo

soak: install
	MCHAT_SOAK=1 $(BIN)/pytest -q tests/e2e/test_faults.py

# The side-by-side benchmark: dev server, fake LLM, the daemon and mmpy_bot 2.2.1 (installed into
# bench/.mmpy-venv on first use), load generator; writes bench/results.md and bench/results.png (~15 min on a 2-core Xeon;
# `python bench/run.py --knowledge-only`: the channel knowledge section alone, ~2.5 min); then the
# summary of a 2,000-message day (bench/summary.md, ~10 s), then 1, 2 and 3 daemons on one PostgreSQL
# and the fail-over gap (bench/active_active.py, ~2 min).
bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/summary_bench.py
	$(BIN)/python bench/active_active.py

bench-memory: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/memory_quality.py
	$(BIN)/python bench/memory_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache data
