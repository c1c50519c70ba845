# Everything runs in a local virtualenv (.venv) created from scratch on first use.
# The CPU build of torch is pinned in constraints.txt (package metadata does not pin torch).

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

# The datasets live beside the checkout (../shared/data) unless DISTIL_TRAINERS_DATA_DIR says otherwise.
export DISTIL_TRAINERS_DATA_DIR ?= $(abspath ../shared/data)
export TOKENIZERS_PARALLELISM ?= false
# `accelerate launch` sets OMP_NUM_THREADS=1 for every process unless told otherwise: use all cores for one process.
NPROC := $(shell nproc 2>/dev/null || echo 1)
LAUNCH = $(VENV)/bin/accelerate launch --num_processes 1 --num_cpu_threads_per_process $(NPROC)

.PHONY: docs docs-serve install quickstart quickstart-annealing quickstart-multitask quickstart-feature-kd quickstart-llm quickstart-rationale test test-fast lint clean bench

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[dev,docs]"
	touch $(STAMP)

install: $(STAMP)

# The distillation recipes distil a fine-tuned teacher: the first quickstart fine-tunes it (MiniLM-L6 on Davidson).
TEACHER := runs/finetune_quickstart/config.json

$(TEACHER): $(STAMP)
	$(LAUNCH) recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml

quickstart: $(TEACHER)
	$(LAUNCH) recipes/ddml.py --config recipes/configs/ddml_quickstart.yaml

quickstart-annealing: $(TEACHER)
	$(LAUNCH) recipes/annealing.py --config recipes/configs/annealing_quickstart.yaml

quickstart-feature-kd: $(TEACHER)
	$(LAUNCH) recipes/feature_kd.py --config recipes/configs/feature_kd_quickstart.yaml

quickstart-llm: $(STAMP)
	$(LAUNCH) recipes/llm_to_classifier.py --config recipes/configs/llm_to_classifier_quickstart.yaml

quickstart-rationale: $(STAMP)
	$(LAUNCH) recipes/rationale_distill.py --config recipes/configs/rationale_quickstart.yaml

# A paper's multi-stage comparison (teacher, students, baselines, one results table): the multi-task annealing run.
quickstart-multitask: $(STAMP)
	$(LAUNCH) -m distil_trainers.papers.annealing_pipeline --config recipes/configs/annealing_pipeline_multitask.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -m "not slow"

# Distillation overhead vs the student's own Trainer step (tiny models, then MiniLM-L6 -> 3 layers on Davidson).
# The comparison with other KD libraries (benchmarks/peers.py) needs their own virtualenv: see benchmarks/RESULTS.md.
bench: $(STAMP)
	$(PY) benchmarks/overhead.py --setup tiny
	$(PY) benchmarks/overhead.py --setup minilm

# The documentation site (docs/ + mkdocs.yml); --strict turns every warning (a broken link, a missing API name) into
# an error, as CI runs it.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	$(VENV)/bin/mkdocs serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
