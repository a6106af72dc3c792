"""Fixtures shared by the whole suite. Module-specific helpers live in their own test files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dvc_project import copy_project

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
PACS = REPO.parent / "shared" / "datasets" / "pacs_cartoon"


@pytest.fixture(autouse=True)
def _isolated_keras_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests away from the user's ~/.keras cache (and so from any real weights there)."""
    home = tmp_path_factory.mktemp("keras_home")
    monkeypatch.setenv("KERAS_HOME", str(home))


@pytest.fixture
def pacs_dir() -> Path:
    """The real PACS cartoon images; the test is skipped where they are absent."""
    if not PACS.is_dir():
        pytest.skip(f"{PACS} not present")
    return PACS


# The heaviest files first (each runs a whole DAG or a queue of experiments): pytest-xdist's
# --dist loadfile hands out whole files in collection order (alphabetical), so a heavy file handed
# out last runs alone at the end; listed here, they start at once and the light files fill in.
FIRST = ("test_dag_full.py", "test_sweep.py", "test_cv.py", "test_compare_dvc.py", "test_predict.py",
         "test_deit.py", "test_weights_refusals.py", "test_timm_weights.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the files in FIRST to the front (a stable sort: everything else keeps its order)."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


def make_project_copy(dest: Path) -> Path:
    """This project (code, dvc.yaml, params, the committed offline `dvc plots show` template and
    plot templates under .dvc/) copied into `dest` as a fresh, committed git repo."""
    return copy_project(REPO, dest, "test project")


def tiny_project(root: Path, target: str) -> Path:
    """A committed project copy in `root`/project with TINY params after `dvc repro TARGET`."""
    from dvc_project import TINY, commit, run, set_params

    project = make_project_copy(root / "project")
    set_params(project, TINY)
    commit(project, "tiny params")
    run(project, "dvc", "repro", target)
    commit(project, f"repro {target}")
    return project


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after `dvc repro evaluate@vit_scratch` (fetch, clean, split, augment,
    train_vit, evaluate@vit_scratch), committed, with a default local-directory remote
    (`<tmp>/remote`) that `dvc push` has filled. Tests clone it; they must not change it."""
    from dvc_project import TINY, commit, run, set_params

    root = tmp_path_factory.mktemp("published")
    project = make_project_copy(root / "project")
    set_params(project, TINY)
    set_params(project, {"train": {"epochs": 3, "patience": 3}})  # learning curves, not points
    run(project, "dvc", "remote", "add", "--default", "storage", str(root / "remote"))
    commit(project, "tiny params and a local remote")
    run(project, "dvc", "repro", "evaluate@vit_scratch")
    commit(project, "repro")
    run(project, "dvc", "push")
    return project


def git_clone(source: Path, dest: Path) -> Path:
    """`git clone source dest` (quiet); returns dest."""
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True, capture_output=True)
    return dest


def bin_path(name: str) -> str:
    """An executable of this venv (dvc, vitbench), falling back to PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throwaway copy of this project, committed, ready for `dvc repro`."""
    return make_project_copy(tmp_path / "project")


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    """A loopback HTTP server (tests/loopback.py): set `server.routes[path] = [(status, body)]`."""
    from loopback import serve

    with serve() as state:
        yield state
