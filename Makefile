# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv first. The demo needs
# only rnnlab's own dependencies, so it installs those alone; the tests, lint and benchmarks add
# every extra, so the suite covers them. uv installs the same pinned packages as pip would, several
# times faster (parallel downloads and unpacking).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.core
STAMP := $(VENV)/.installed
# uv does not read pip's configuration: hand it the local wheel folders pip is told about (the CPU
# build of torch may lie there).
FIND_LINKS = $${PIP_FIND_LINKS:-$$($(BIN)/pip config get global.find-links 2>/dev/null)}
INSTALL = UV_FIND_LINKS="$(FIND_LINKS)" $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

# macOS's own python3 (Xcode's command-line tools) is 3.9: say which Python to name instead.
$(CORE): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "make: $(PYTHON) is \
	Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); rnnlab needs 3.10 or \
	later: make $(MAKECMDGOALS) PYTHON=python3.12 (or another 3.10+)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(INSTALL) -e .
	touch $(CORE)

$(STAMP): $(CORE)
	$(INSTALL) -e ".[dev,export,serve,embeddings,tune]"
	touch $(STAMP)

# The training command scores the test split itself once training ends (data.test; the run selects
# its checkpoint on valid only): a separate `rnnlab evaluate` would import torch and load the model
# again, 6–7 s of a 5-minute demo on a slow 2-core CPU.
demo: $(CORE)
	$(BIN)/rnnlab train seq2seq --config configs/seq2seq/fra-eng.yaml --out runs/demo --overwrite \
		--set data.test=data/fra-eng/test.tsv
	printf "go .\ni lost .\nhe's calm .\ni'm home .\n" | $(BIN)/rnnlab translate runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
