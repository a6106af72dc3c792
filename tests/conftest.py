"""Fixtures shared by the whole suite. Module-specific helpers live in their own test files."""

from __future__ import annotations

import os
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


def make_project_copy(dest: Path) -> Path:
    """This project (code, dvc.yaml, params) copied into `dest` as a fresh, committed git repo."""
    return copy_project(REPO, dest, "test project")


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
