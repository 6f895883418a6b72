# make test    the whole suite (the two-node cluster test included: about 40 s of it)
# make e2e     the end-to-end tests only, with the heavier cluster variants (CRUCIBLE_E2E_HEAVY=1)
# make bench   the benchmarks; each writes its table to benchmarks/results/
# Tests that need PostgreSQL read CRUCIBLE_TEST_POSTGRES_URL and skip without it.
PYTHON ?= .venv/bin/python
export RAY_AUTH_MODE ?= disabled

.PHONY: test e2e bench

test:
	$(PYTHON) -m pytest

e2e:
	CRUCIBLE_E2E_HEAVY=1 $(PYTHON) -m pytest -m slow tests/e2e

bench:
	$(PYTHON) benchmarks/scaling.py
	$(PYTHON) benchmarks/overhead.py
	$(PYTHON) benchmarks/bo_quality.py
