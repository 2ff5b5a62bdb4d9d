# Two commands: `make demo` and `make test`. Each sets itself up in .venv from
# nothing but python3; `make test` also runs the suite under Python 3.12 (zarr
# 3.4.x) when pyenv has it, and under python3 with every direct dependency at the
# lowest version pyproject.toml allows (.venv-floor).
PYTHON ?= python3
VENV ?= .venv
PY312 := $(shell PYENV_VERSION=3.12.1 pyenv which python 2>/dev/null)
VENV312 ?= .venv-3.12
VENVFLOOR ?= .venv-floor
PYTEST_ARGS ?=
LINT_PATHS := shmstore tests examples benchmarks .ci

.PHONY: demo test test-311 test-312 test-floor lint bench docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[test]"
	touch $@

$(VENV312)/.installed: pyproject.toml
	$(PY312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install -q --upgrade pip
	$(VENV312)/bin/python -m pip install -q -e ".[test]"
	touch $@

# Floors: .ci/floors.py pins each direct dependency (and the test extra) to the
# lowest version its range allows; what they pull in resolves to the newest.
# Rebuilt from scratch whenever the ranges change.
$(VENVFLOOR)/.installed: pyproject.toml .ci/floors.py
	rm -rf $(VENVFLOOR)
	$(PYTHON) -m venv $(VENVFLOOR)
	$(VENVFLOOR)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) .ci/floors.py test > $(VENVFLOOR)/floors.txt
	$(VENVFLOOR)/bin/python -m pip install -q -c $(VENVFLOOR)/floors.txt -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python examples/flagship.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python .ci/check_local_imports.py

test-311: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-312:
ifneq ($(PY312),)
	$(MAKE) $(VENV312)/.installed
	$(VENV312)/bin/python -m pytest $(PYTEST_ARGS)
else
	@echo "Python 3.12 not found through pyenv; skipping the zarr 3.4 run"
endif

# The floor of ruff (test extra) is tested by linting with it too.
test-floor: $(VENVFLOOR)/.installed
	$(VENVFLOOR)/bin/ruff check $(LINT_PATHS)
	$(VENVFLOOR)/bin/ruff format --check $(LINT_PATHS)
	$(VENVFLOOR)/bin/python -m pytest $(PYTEST_ARGS)

test: lint test-311 test-312 test-floor

# The comparison libraries (SharedArray, a C extension) are only needed here.
bench: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e ".[bench]"
	$(VENV)/bin/python benchmarks/bench_store.py

# NO_MKDOCS_2_WARNING: Material for MkDocs prints an end-of-life notice on every
# build unless it is set (the notice names it); mkdocs.yml says why Material.
# docs/plots.py redraws the results figures from benchmarks/results/*.json.
docs: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(VENV312) $(VENVFLOOR) .pytest_cache .ruff_cache
