# The two commands of the README: `make run` and `make test`. Both set up .venv on
# the first call (torch first, then the package) and reuse it afterwards.
# Code style, as SB3 keeps it: `make lint` (ruff check), `make check-codestyle`
# (ruff format --check), `make format` (rewrite), `make type` (mypy against the
# listed baseline of known errors, mypy-baseline.txt, which may only shrink).
PYTHON ?= python3
VENV ?= .venv
# A CPU machine takes torch==2.13.0 from a local wheel; on a CUDA machine set e.g.
# TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH ?= torch==2.13.0
EXTRAS ?= test,distributed,tensorboard,video
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: run test setup clean lint check-codestyle format type

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m benchmarks.run

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

check-codestyle: $(STAMP)
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

type: $(STAMP)
	$(VENV)/bin/mypy rlkit benchmarks | $(VENV)/bin/mypy-baseline filter

clean:
	rm -rf $(VENV) .pytest_cache
