# Two commands on a fresh machine with Python 3.11 and make:
#   make run    set everything up and serve the bundled policies/ on http://127.0.0.1:8080
#   make test   set everything up and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test lint bench typecheck mutation clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/ttlpolicy lint policies
	$(BIN)/ttlpolicy serve --policies policies

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

typecheck: $(BIN)/.installed
	$(BIN)/python -m mypy

lint: $(BIN)/.installed
	$(BIN)/ttlpolicy lint policies

bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	# OPA's Go engine: its wheel declares Python >= 3.14 but works on 3.11 (see benchmarks/README.md)
	-$(BIN)/python -m pip install --quiet --ignore-requires-python --no-deps 'opa-golib-python-bindings>=0.4.4'
	$(BIN)/python benchmarks/run.py

# Mutation testing of the decision path (docs/mutation.md): about an hour on 2 cores; writes
# benchmarks/MUTATION.md. `make mutation GROUPS="evaluate diffing"` runs only those groups.
GROUPS ?=
mutation: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	nice -n 10 $(BIN)/python benchmarks/mutation.py --max-children 2 $(GROUPS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .hypothesis
