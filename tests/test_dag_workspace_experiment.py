"""A DVC experiment in the workspace of the whole tiny DAG, as a user runs it: changing the
scratch ViT's patch size re-runs only its stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvc_project import run, stages_run

pytestmark = pytest.mark.slow


def test_patch_size_experiment_reruns_only_the_scratch_vit(full_dag: Path, tmp_path: Path) -> None:
    from conftest import copy_built

    project = copy_built(full_dag, tmp_path / "project")     # the suite's full `dvc repro`
    out = run(project, "dvc", "exp", "run", "-S", "vit.patch_size=8")
    assert sorted(stages_run(out.stdout)) == ["compare", "evaluate@vit_scratch", "fetch", "train_vit"]
    diff = run(project, "dvc", "metrics", "diff", "--json").stdout
    assert "metrics/vit_scratch.json" in json.loads(diff)
    params_diff = json.loads(run(project, "dvc", "params", "diff", "--json").stdout)
    change = params_diff["params.yaml"]["vit.patch_size"]
    assert (change["old"], change["new"]) == (4, 8)
