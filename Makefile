# ctxppl: every target creates .venv when missing (newest tested Python >= 3.12, else 3.11;
# override with PYTHON=/path/to/python) and installs the project into it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
PYTEST_WORKERS ?= 2
EXTRA ?=
PYTHON ?=

.PHONY: demo test test-slow bench lint docs notebooks doctest clean venv

$(PY):
	$$(PYTHON='$(PYTHON)' .ci/find-python) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e ".[test,lint]" $(foreach e,$(EXTRA),'$(e)')
	rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ctxppl demo

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q tests

test-slow: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q -m slow tests

doctest: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -p no:cacheprovider --doctest-modules ctxppl -o addopts=""

docs: $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

notebooks: $(STAMP)
	$(PY) -m pip install -q -e ".[notebooks]"
	CTXPPL_SMALL=1 $(PY) -m pytest -q -p no:cacheprovider -m notebooks tests/test_notebooks.py

lint: $(STAMP)
	$(VENV)/bin/ruff check ctxppl tests bench

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	bash bench/peers/setup_contextualized.sh
	$(PY) bench/seed_demo.py
	$(PY) bench/plate_overhead.py
	$(PY) bench/nuts_reuse.py
	$(PY) bench/scale.py
	$(PY) bench/families.py
	$(PY) bench/mixed.py
	$(PY) bench/online.py
	$(PY) bench/many_models.py
	$(MAKE) test-slow

clean:
	rm -rf $(VENV) .pytest_cache demo_out site
