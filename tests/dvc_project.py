"""Drive `dvc` in a throwaway project copy (`copy_project`): tiny params, subprocess runs, stage logs.

Also used by benchmarks/run.py (which puts tests/ on sys.path)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

VENV_BIN = str(Path(sys.executable).parent)

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


# A configuration small enough for the whole DAG to run in a minute or two on 2 CPU cores.
TINY = {
    "dataset": {"synthetic": {"per_class": 12, "image_size": 64}},
    "clean": {"min_per_class": 6},
    "split": {"val": 0.2, "test": 0.25},
    # no augmented copies: half the training images, half the training compute of every DAG test
    # (the augment stage still runs; its copies go through DVC in test_dag_data.py)
    "augment": {"copies": 0},
    # online augmentation off in the DAG tests, as before it became the default (the suite took
    # 34 min with it on in every DAG, 16 min before); it is tested in test_online.py,
    # test_recipe.py and by the full-size demo run
    "augment_online": {"flip": False, "translate": 0.0, "zoom": 0.0, "contrast": 0.0},
    "train": {"epochs": 1, "batch_size": 16, "patience": 1},
    # VGG16, the dogs study's CNN: 20 layers against MobileNetV2's 155, so Keras builds its training
    # step in a fraction of the time (most of a tiny train_cnn); MobileNetV2 is trained in
    # test_training.py and test_transfer.py
    "cnn": {"arch": "vgg16", "image_size": 32, "pretrained": False},
    "vit": {"image_size": 24, "patch_size": 4, "projection_dim": 16, "num_heads": 2, "layers": 1,
            "mlp_head": [16]},
    # one block of vit-keras' ViT-B/32, params.yaml's model before DeiT-Ti/16: the DAG tests were
    # written around it (with DeiT-Ti/16 at 32 px both ViTs ended at chance in one suite run)
    "vit_ft": {"variant": "b32", "weights": "imagenet21k+imagenet2012", "image_size": 32,
               "pretrained": False, "blocks": 1},
    "evaluate": {"attention_samples": 2},
    "compare": {"samples": 4},
}


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `changes` into `base` (in place) and return it."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def set_params(project: Path, changes: dict[str, Any]) -> None:
    """Merge `changes` into the project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(deep_update(params, changes), sort_keys=False))


def commit(project: Path, message: str = "update") -> None:
    """Commit everything in the project copy (dvc.lock, params)."""
    git = ["git", "-c", "user.email=test@vitbench.local", "-c", "user.name=vitbench test"]
    subprocess.run(git + ["add", "-A"], cwd=project, check=True, capture_output=True)
    subprocess.run(git + ["commit", "-q", "-m", message], cwd=project, check=True, capture_output=True)


def run(project: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command (dvc, python ...) in the project with this venv first on PATH."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "vitbench test", "GIT_AUTHOR_EMAIL": "test@vitbench.local",
           "GIT_COMMITTER_NAME": "vitbench test", "GIT_COMMITTER_EMAIL": "test@vitbench.local"}
    proc = subprocess.run(list(args), cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def stages_run(output: str) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` actually ran, from its log."""
    return re.findall(r"Running stage '([^']+)'", output)


def changed_stages(project: Path) -> set[str]:
    """Stages `dvc status` reports as changed, leaving out fetch's standing "always changed"
    (dvc.yaml: it runs on every repro and rewrites nothing while its source is unchanged)."""
    out = run(project, "dvc", "status", "--json").stdout
    return {stage for stage, why in json.loads(out or "{}").items() if why != ["always changed"]}
