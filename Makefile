# Every target installs what it needs first (scripts/bootstrap is a no-op when up to date).
# Members are found by the globs of the root pyproject's workspace: none is named here.
VENV := .venv/bin
SRC := $(wildcard libs/*/src services/*/src)
TESTS := $(wildcard tests libs/*/tests services/*/tests)
# Whole files to four test workers, handed out in collection order, where the suite's plugin
# puts the files marked slow first (xdist's own order, most tests first, left them for last).
PYTEST := scripts/with-redis $(VENV)/python -m pytest -n 4 --dist loadfile --no-loadscope-reorder
.PHONY: setup lock run test test-deep lint bench

setup:
	@scripts/bootstrap

# After changing any pyproject's dependencies: regenerates uv.lock (commit it with them).
lock:
	scripts/lock

run: setup
	$(VENV)/podpulse loadtest --target twin --concurrency 1,2,3,4 --runs 30

# The generated-case (hypothesis) suites run a tenth of their cases here (the fast profile) ...
test: setup
	$(PYTEST)

# ... and every one of them here (podpulse.common.testing's deep profile).
test-deep: setup
	$(PYTEST) --hypothesis-profile=deep

lint: setup
	scripts/lock --check
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	# The Compose Specification schema ships inside check-jsonschema: no network needed.
	$(VENV)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(VENV)/python scripts/env-example --check
	MYPYPATH=$(subst $() ,:,$(SRC)) $(VENV)/mypy $(SRC) $(TESTS) benchmarks scripts

bench: setup
	$(VENV)/python benchmarks/twin.py
	$(VENV)/python benchmarks/job_loop.py
	$(VENV)/python benchmarks/runpod_import.py
