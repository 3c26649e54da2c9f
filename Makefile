# The two commands of the README: `make run` and `make test`. Both set up .venv on
# the first call (torch first, then the package) and reuse it afterwards.
PYTHON ?= python3
VENV ?= .venv
# A CPU machine takes torch==2.13.0 from a local wheel; on a CUDA machine set e.g.
# TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH ?= torch==2.13.0
EXTRAS ?= test,distributed,tensorboard,video
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: run test setup clean

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

clean:
	rm -rf $(VENV) .pytest_cache
