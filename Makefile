# Every target installs what it needs first (scripts/bootstrap is a no-op when up to date).
VENV := .venv/bin
.PHONY: setup run test lint bench

setup:
	@scripts/bootstrap

run: setup
	$(VENV)/podpulse loadtest --concurrency 1,2,3,4 --runs 30

test: setup
	scripts/with-redis $(VENV)/python -m pytest

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy libs/common/src libs/twin/src services/worker/src services/prober/src services/alerter/src services/tagger/src

bench: setup
	$(VENV)/python benchmarks/twin.py
