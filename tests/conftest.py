"""Fixtures shared by the whole suite. Module-specific helpers live in their own test files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
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
# --dist loadfile hands the first files to the workers, one each, then each next file to the
# first worker free, in collection order (alphabetical); a heavy file handed out last
# runs alone at the end. test_dag_full builds the shared full DAG (`full_dag`) on the first worker
# while the second and third start the sweep's and cv's queues; the other users of `full_dag`
# follow when it is built (a worker waiting for its lock would sit idle). test_training, the
# longest file without a DAG, comes next: handed out in alphabetical order it ran alone at the
# end, one core idle.
FIRST = ("test_dag_full.py", "test_sweep.py", "test_cv.py", "test_dag_experiments.py",
         "test_training.py", "test_compare_dvc.py", "test_predict.py", "test_weights_refusals.py",
         "test_deit.py", "test_refusals_dvc.py", "test_timm_weights.py")


# Fixtures that run `dvc repro` through training: every test using one is slow (the fast tier,
# `-m "not slow"`, leaves it out), marked or not.
DAG_FIXTURES = ("published", "full_dag")


@pytest.hookimpl(tryfirst=True)   # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the users of DAG_FIXTURES slow; move the files in FIRST to the front (a stable sort:
    everything else keeps its order)."""
    for item in items:
        if set(DAG_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
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


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str,
               build: Callable[[Path], Path]) -> Path:
    """`build(root)` run once per test run and shared by every pytest-xdist worker: the first to
    ask builds it in a folder of this run that they all see (under a file lock), the others wait
    for it and get the same path. Tests must not change what it returns: `copy_built` it first."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent                       # the run's folder, above each worker's own
    root = base / f"built-{name}"
    with FileLock(f"{root}.lock"):
        result = root / "result"
        if not result.is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            result.write_text(str(build(root)))
    return Path(result.read_text())


def copy_built(project: Path, dest: Path) -> Path:
    """A copy of a reproduced project (git history, DVC cache and outputs; not DVC's temporary
    state, which belongs to its folder) that a test may change; `dvc status` sees it up to date.
    The DVC cache's files are hard-linked, not copied: DVC writes each object once, read-only, and
    never changes it in place (a copy that adds or removes objects leaves the original's alone)."""
    cache = project / ".dvc" / "cache"

    def link_cache_objects(src: str, dst: str) -> None:
        if Path(src).is_relative_to(cache):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(project, dest, symlinks=True, copy_function=link_cache_objects,
                    ignore=lambda folder, _names: (["tmp"] if Path(folder).name == ".dvc" else []))
    return dest


# A full DAG of TINY params for a user whose class folders are named like markup and whose CNNs
# never learn (learning rates 1e-9: they stay at their random initial weights), shared by
# test_dag_full, test_dag_experiments, test_compare_dvc and the refusal tests.
HOSTILE = {"cat": "<img src=x onerror=alert(1)>", "dog": "**bold**"}
UNTRAINABLE_CNNS = {"cnn": {"transfer": {"lr": 1e-9}, "finetune": {"lr": 1e-9}}}


def _build_full_dag(root: Path) -> Path:
    from dvc_project import TINY, commit, run, set_params, stages_run

    from vitbench.data.synthetic import generate
    from vitbench.models.registry import model_ids

    source = root / "images"
    generate(source, per_class=TINY["dataset"]["synthetic"]["per_class"], image_size=64, seed=2)
    for plain, hostile in HOSTILE.items():
        shutil.move(source / plain, source / hostile)
    project = make_project_copy(root / "project")
    set_params(project, TINY)
    set_params(project, {"dataset": {"source": str(source)}, **UNTRAINABLE_CNNS})
    commit(project, "tiny params, hostile class names, untrainable CNNs")
    ran = set(stages_run(run(project, "dvc", "repro").stdout))
    assert {"fetch", "train_cnn", "train_vit", "finetune_vit", "compare"} <= ran, ran
    assert {f"evaluate@{m}" for m in model_ids()} <= ran, ran
    commit(project, "repro")
    return project


@pytest.fixture(scope="session")
def full_dag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG reproduced and committed (`_build_full_dag`), once per test run; read it, or
    `copy_built` it to change it."""
    return built_once(tmp_path_factory, "full_dag", _build_full_dag)


def _build_published(root: Path) -> Path:
    from dvc_project import TINY, commit, run, set_params

    project = make_project_copy(root / "project")
    set_params(project, TINY)
    set_params(project, {"train": {"epochs": 3, "patience": 3}})  # learning curves, not points
    run(project, "dvc", "remote", "add", "--default", "storage", str(root / "remote"))
    commit(project, "tiny params and a local remote")
    run(project, "dvc", "repro", "evaluate@vit_scratch")
    commit(project, "repro")
    run(project, "dvc", "push")
    return project


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after `dvc repro evaluate@vit_scratch` (fetch, clean, split, augment,
    train_vit, evaluate@vit_scratch), committed, with a default local-directory remote
    (`<tmp>/remote`) that `dvc push` has filled; built once per test run. Tests clone it; they
    must not change it."""
    return built_once(tmp_path_factory, "published", _build_published)


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
