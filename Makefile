# The two set-up commands of the README are `make serve` and `make test`; each creates the
# virtual environment on first use, so a fresh machine needs nothing but Python 3.11 and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: serve test lint typecheck pytest bench legacy clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

serve: $(STAMP)  ## start onegate on its built-in default (http://127.0.0.1:8080)
	$(BIN)/onegate serve $(ARGS)

test: lint typecheck pytest  ## the whole suite: lint, types, tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Under coverage, gateway subprocesses and their workers included (pyproject's [tool.coverage]):
# every process writes its own data file; they are combined and the report printed even when a
# test failed, and the exit status is pytest's. `make pytest COVERAGE=no` runs without it.
COVERAGE ?= yes
pytest: $(STAMP)
ifeq ($(COVERAGE),no)
	$(BIN)/pytest $(ARGS)
else
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(ARGS); status=$$?; \
	$(BIN)/coverage combine --quiet && $(BIN)/coverage report; \
	exit $$status
endif

legacy: $(STAMP)  ## the three stand-in legacy backends (:3000, :8001, :8000)
	$(BIN)/onegate dev legacy-backends

bench: $(STAMP)  ## proxy benchmark against nginx and a naive proxy (installs nginx and wrk)
	$(BIN)/python benchmarks/proxy_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
