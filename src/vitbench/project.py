"""Throwaway copies of a vitbench project, for the end-to-end tests and the benchmark."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# What a copy needs to run the DAG: code, dvc.yaml, params; no data, models, caches or venv.
PROJECT_FILES = ("dvc.yaml", "params.yaml", "pyproject.toml", "stages", "src", ".dvc", ".dvcignore",
                 ".gitignore")


def copy_project(root: Path, dest: Path, message: str = "project copy") -> Path:
    """Copy the project at `root` into `dest` as a fresh git repo with one commit (dvclive needs one)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.egg-info", "tmp", "cache", "config.local"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    git = ["git", "-c", "user.email=copy@vitbench.local", "-c", "user.name=vitbench"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-q", "-m", message], cwd=dest, check=True)
    return dest
