"""DVC experiments on the whole tiny DAG, as a user runs them: one in the workspace (the scratch
ViT's patch size: only its stages re-run), then a queue of two run side by side, one of which
retrains every model (what `dvc exp show` then lists)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvc_project import run, stages_run

pytestmark = pytest.mark.slow

MAX_EXP_COLUMNS = 60
DROP_DEPS = r"models/|plots/|metrics/\w+\.json$"   # `dvc exp show --drop`: the deps' hash columns


@pytest.fixture(scope="module")
def experimented(full_dag: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the suite's full `dvc repro` after `dvc exp run -S vit.patch_size=8` in its
    workspace, and that run's output."""
    from conftest import copy_built

    project = copy_built(full_dag, tmp_path_factory.mktemp("experiments") / "project")
    return project, run(project, "dvc", "exp", "run", "-S", "vit.patch_size=8").stdout


def test_patch_size_experiment_reruns_only_the_scratch_vit(experimented: tuple[Path, str]) -> None:
    project, output = experimented
    assert sorted(stages_run(output)) == ["compare", "evaluate@vit_scratch", "fetch", "train_vit"]
    diff = run(project, "dvc", "metrics", "diff", "--json").stdout
    assert "metrics/vit_scratch.json" in json.loads(diff)
    params_diff = json.loads(run(project, "dvc", "params", "diff", "--json").stdout)
    change = params_diff["params.yaml"]["vit.patch_size"]
    assert (change["old"], change["new"]) == (4, 8)


def test_queued_experiments_run_and_fit_exp_show(experimented: tuple[Path, str]) -> None:
    """Two queued experiments run by `dvc queue start`: `-S train.epochs=2` (every model
    retrained) and `-S compare.samples=2` (the compare stage only). `dvc exp show --only-changed`
    over them and the workspace's experiment stays within MAX_EXP_COLUMNS columns once the changed
    deps' hashes are dropped with the README's --drop. The queue runs them side by side (`dvc
    queue start -j 2`)."""
    from vitbench.experiments.queue import start_queue, wait_for_queue

    reproduced = experimented[0]
    run(reproduced, "dvc", "exp", "run", "--queue", "-S", "train.epochs=2")
    run(reproduced, "dvc", "exp", "run", "--queue", "-S", "compare.samples=2")
    # as `vitbench sweep` starts and waits: `dvc queue start` through pipes would block until its
    # daemon workers exit, since they inherit its output
    start_queue(reproduced, jobs=2)
    rows = wait_for_queue(reproduced, timeout=900, jobs=2)
    assert [t.status for t in rows] == ["Success", "Success"], rows
    show = json.loads(run(reproduced, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(show)
    assert '"samples": 2' in text and '"epochs": 2' in text
    header = run(reproduced, "dvc", "exp", "show", "--only-changed", "--md").stdout.splitlines()[0]
    columns = [c.strip() for c in header.strip().strip("|").split("|")]
    assert {"train.epochs", "compare.samples", "vit.patch_size"} <= set(columns), columns
    assert "metrics/vit_scratch.json:accuracy" in columns, columns
    assert not {"display_name", "kind", "family", "model"} & {c.split(":")[-1] for c in columns}
    deps = [c for c in columns if c.startswith(("models/", "plots/")) or c.endswith(".json")]
    assert len(columns) - len(deps) <= MAX_EXP_COLUMNS, columns
    kept = run(reproduced, "dvc", "exp", "show", "--only-changed", "--md", "--drop", DROP_DEPS)
    assert kept.stdout.splitlines()[0].count("|") - 1 == len(columns) - len(deps), kept.stdout
