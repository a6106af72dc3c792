"""A DVC remote and the model registry: push from one clone, pull into a fresh one, nothing to
re-run; the five models declared as artifacts and fetched with `dvc artifacts get`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, git_clone
from dvc_project import run, stages_run
from vitbench.models.registry import model_ids

MODEL_IDS = model_ids()
from vitbench.core.fsutil import sha256_file

pytestmark = pytest.mark.slow

PULLED = ("data/raw", "data/clean", "data/split", "data/augmented", "models/vit_scratch")


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_fresh_clone_pulls_everything_and_has_nothing_to_reproduce(published: Path,
                                                                       tmp_path: Path) -> None:
    clone = git_clone(published, tmp_path / "clone")
    assert not (clone / "models" / "vit_scratch" / "model.keras").exists()  # git holds no data, the remote does
    run(clone, "dvc", "pull", "--with-deps", "evaluate@vit_scratch")  # the stages the fixture ran
    for out in PULLED:
        assert _tree_hashes(clone / out) == _tree_hashes(published / out), out
    status = json.loads(run(clone, "dvc", "status", "--json", "--with-deps",
                            "evaluate@vit_scratch").stdout or "{}")
    assert status == {"fetch": ["always changed"]}  # it runs each time, rewriting nothing here
    assert stages_run(run(clone, "dvc", "repro", "evaluate@vit_scratch").stdout) == ["fetch"]
    cloud = json.loads(run(clone, "dvc", "status", "--cloud", "--json").stdout or "{}")
    assert cloud == {}  # the remote holds everything the clone has


def test_the_five_models_are_declared_as_model_artifacts() -> None:
    artifacts = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    assert list(artifacts) == list(MODEL_IDS)
    for model_id, spec in artifacts.items():
        assert spec["path"] == f"models/{model_id}/model.keras" and spec["type"] == "model"
        assert spec["desc"] and model_id.split("_")[0] in spec["labels"]  # cnn or vit


def test_dvc_artifacts_get_fetches_a_registered_model_that_predicts(published: Path,
                                                                    tmp_path: Path) -> None:
    registry = git_clone(published, tmp_path / "registry")
    run(registry, "gto", "register", "vit_scratch", "--version", "v0.1.0")  # git tag vit_scratch@v0.1.0
    listing = json.loads(run(tmp_path, "dvc", "ls", "--json", str(registry), "models").stdout)
    assert {"vit_scratch"} <= {entry["path"] for entry in listing}
    work = tmp_path / "elsewhere"
    work.mkdir()
    got = tmp_path / "vit_scratch.keras"
    run(work, "dvc", "artifacts", "get", str(registry), "vit_scratch", "-o", str(got))
    assert sha256_file(got) == sha256_file(published / "models" / "vit_scratch" / "model.keras")
    # the fetched file is a whole model: it loads in Keras' safe mode once vitbench is imported
    code = ("import sys, vitbench, keras; m = keras.saving.load_model(sys.argv[1]); "
            "print(m.output_shape[-1])")
    out = run(tmp_path, sys.executable, "-c", code, str(got))
    classes = json.loads((published / "models" / "vit_scratch" / "record.json").read_text())["classes"]
    assert out.stdout.strip().splitlines()[-1] == str(len(classes))
