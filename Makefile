# The two quick-start commands:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
# uv installs the lock (much faster than pip, see docs/reliability.md "Installing: the lock"); pinned like the rest
UV_VERSION ?= 0.13.9
UV     := $(BIN)/uv
# pytest-xdist workers; one test file per worker (module fixtures are built once). 3 on 2 cores:
# the DAG tests spend part of their time waiting on DVC's queue, their subprocesses and the shared
# DAG's lock (CHANGELOG.md)
TEST_WORKERS ?= 3
# TensorFlow threads per test process: the workers and their stage processes outnumber the cores, and
# TensorFlow's pools spin while they wait; one thread each wastes less CPU (CHANGELOG.md)
TEST_TF_THREADS ?= 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup demo test test-fast bench lock clean-venv

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

# the exact, tested versions of requirements.lock; vitbench itself editable (pyproject keeps ranges).
# --compile-bytecode: every stage and dvc call is a new Python process; without .pyc files (uv writes
# none by default, and none are written where PYTHONDONTWRITEBYTECODE is set) each one compiles
# TensorFlow's sources again, seconds per stage and per test that runs one
$(BIN)/vitbench: pyproject.toml $(LOCK) | $(UV)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -r $(LOCK) -e '.[dev]'
	touch $@

setup: $(BIN)/vitbench             ## create .venv, install the locked dependencies and vitbench

# --universal: one lock for every platform and every Python from --python-version up (markers where
# they differ), so for both versions pyproject's requires-python allows, 3.11 and 3.12
lock: | $(UV)                   ## re-resolve requirements.lock from pyproject.toml (current pins kept where they fit; LOCK_ARGS=--upgrade for the newest)
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 -o $(LOCK) $(LOCK_ARGS)

demo: setup                     ## run the whole pipeline on the embedded synthetic dataset
	@git rev-parse --verify HEAD >/dev/null 2>&1 || { echo "vitbench needs a git repo with a commit (dvclive)"; exit 1; }
	PATH=$(abspath $(BIN)):$$PATH dvc repro
	PATH=$(abspath $(BIN)):$$PATH dvc metrics show

test: setup                     ## run the test suite (CI runs this)
	PATH=$(abspath $(BIN)):$$PATH VITBENCH_LOCK=$(abspath $(LOCK)) TF_NUM_INTRAOP_THREADS=$(TEST_TF_THREADS) \
	  TF_NUM_INTEROP_THREADS=$(TEST_TF_THREADS) OMP_NUM_THREADS=$(TEST_TF_THREADS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

# the fast tier: no DAG runs, no model trained end to end; two workers (each collects the whole
# suite, TensorFlow imports included, so more workers cost more than they give here)
test-fast: setup                ## run the fast tier of the tests (`-m "not slow"`, under a minute)
	$(MAKE) test TEST_WORKERS=2 PYTEST_ARGS='-m "not slow" $(PYTEST_ARGS)'

bench: setup                    ## print the benchmark table (see benchmarks/)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/run.py

clean-venv:
	rm -rf $(VENV)
