# ctxppl: every target creates .venv when missing (newest tested Python >= 3.12, else 3.11;
# override with PYTHON=/path/to/python) and installs into it what that target needs: the
# package alone for `make demo`, plus the test / lint / docs / bench extras for those
# targets (pip reuses the wheels in its cache; a stamp per extra and pyproject.toml version).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HASH := $(shell cat pyproject.toml | md5sum | cut -c1-8)
STAMP := $(VENV)/.installed-base-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)
LINT_STAMP := $(VENV)/.installed-lint-$(HASH)
PYTEST_WORKERS ?= 2
EXTRA ?=
PYTHON ?=

.PHONY: demo test test-slow bench lint docs notebooks doctest clean venv

$(PY):
	$$(PYTHON='$(PYTHON)' .ci/find-python) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e . $(foreach e,$(EXTRA),'$(e)')
	rm -f $(VENV)/.installed-*; touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[test]" $(foreach e,$(EXTRA),'$(e)')
	touch $(TEST_STAMP)

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[lint]" $(foreach e,$(EXTRA),'$(e)')
	touch $(LINT_STAMP)

venv: $(TEST_STAMP) $(LINT_STAMP)

demo: $(STAMP)
	$(VENV)/bin/ctxppl demo

test: $(TEST_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q tests

test-slow: $(TEST_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q -m slow tests

doctest: $(TEST_STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -p no:cacheprovider --doctest-modules ctxppl -o addopts=""

docs: $(STAMP)
	$(PY) -m pip install -q -e ".[docs]" $(foreach e,$(EXTRA),'$(e)')
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

notebooks: $(TEST_STAMP)
	$(PY) -m pip install -q -e ".[notebooks]" $(foreach e,$(EXTRA),'$(e)')
	CTXPPL_SMALL=1 $(PY) -m pytest -q -p no:cacheprovider -m notebooks tests/test_notebooks.py

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check ctxppl tests bench

bench: $(TEST_STAMP)
	$(PY) -m pip install -q -e ".[bench]" $(foreach e,$(EXTRA),'$(e)')
	bash bench/peers/setup_contextualized.sh
	bash bench/peers/setup_lme4.sh
	$(PY) bench/seed_demo.py
	$(PY) bench/plate_overhead.py
	$(PY) bench/nuts_reuse.py
	$(PY) bench/fresh_process.py
	$(PY) bench/scale.py
	$(PY) bench/families.py
	$(PY) bench/mixed.py
	$(PY) bench/online.py
	$(PY) bench/many_models.py
	$(PY) bench/sbc.py
	$(PY) bench/null_pvalues.py
	$(PY) bench/calibration.py
	$(PY) bench/distributed.py
	$(MAKE) test-slow

clean:
	rm -rf $(VENV) .pytest_cache demo_out site
