# The two quick-start commands:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup demo test bench clean-venv

$(BIN)/vitbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/vitbench          ## create .venv and install vitbench with its dependencies

demo: setup                     ## run the whole pipeline on the embedded synthetic dataset
	@git rev-parse --verify HEAD >/dev/null 2>&1 || { echo "vitbench needs a git repo with a commit (dvclive)"; exit 1; }
	PATH=$(abspath $(BIN)):$$PATH dvc repro
	PATH=$(abspath $(BIN)):$$PATH dvc metrics show

test: setup                     ## run the test suite (CI runs this)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup                    ## print the benchmark table (see benchmarks/)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/run.py

clean-venv:
	rm -rf $(VENV)
