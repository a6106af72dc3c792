"""DVC experiments on the whole tiny DAG, as a user runs them: one in the workspace (the scratch
ViT's patch size: only its stages re-run), then a queue of two run side by side, one of which
retrains the pretrained ViT (what `dvc exp show` then lists)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvc_project import run, stages_run

from vitbench.models.registry import model_ids

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
    """Two queued experiments run by `dvc queue start -j 2`, side by side: `-S
    vit_ft.finetune.lr=2.0e-5` (finetune_vit retrained in the queue's own copy of the project) and
    `-S compare.samples=2` (the compare stage only). `dvc exp show --only-changed` with the
    README's --drop stays within MAX_EXP_COLUMNS columns even were every model retrained (as by
    `-S train.epochs=N`): the columns it shows now plus every metric column a retraining can
    change."""
    from vitbench.experiments.queue import start_queue, wait_for_queue

    reproduced = experimented[0]
    run(reproduced, "dvc", "exp", "run", "--queue", "-S", "vit_ft.finetune.lr=2.0e-5")
    run(reproduced, "dvc", "exp", "run", "--queue", "-S", "compare.samples=2")
    # as `vitbench sweep` starts and waits: `dvc queue start` through pipes would block until its
    # daemon workers exit, since they inherit its output
    start_queue(reproduced, jobs=2)
    rows = wait_for_queue(reproduced, timeout=900, jobs=2)
    assert [t.status for t in rows] == ["Success", "Success"], rows
    show = json.loads(run(reproduced, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(show)
    assert '"samples": 2' in text and '"lr": 2e-05' in text

    def header(*options: str) -> list[str]:
        first = run(reproduced, "dvc", "exp", "show", "--md", *options).stdout.splitlines()[0]
        return [c.strip() for c in first.strip().strip("|").split("|")]

    changed = header("--only-changed")
    assert {"vit_ft.finetune.lr", "compare.samples", "vit.patch_size"} <= set(changed), changed
    assert {"metrics/vit_scratch.json:accuracy",
            "metrics/vit_finetuned.json:train_seconds"} <= set(changed), changed
    assert "metrics/cnn_transfer.json:train_seconds" not in changed   # the CNNs did not re-run
    deps = [c for c in changed if c.startswith(("models/", "plots/")) or c.endswith(".json")]
    kept = header("--only-changed", "--drop", DROP_DEPS)
    assert kept == [c for c in changed if c not in deps], kept
    # the worst case: the columns shown now plus every metric column of the whole table that a
    # retraining can change (`pretrained` changes with the *.pretrained params only)
    every = header("--drop", DROP_DEPS)
    assert not {"display_name", "kind", "family", "model"} & {c.split(":")[-1] for c in every}
    params = set(_flat(show[0]["data"]["params"]["params.yaml"]["data"]))
    # columns no retraining changes: the deps' paths (data/raw, src/...) and `pretrained`
    unchanging = {c for c in every if ("/" in c and ":" not in c) or c.endswith(":pretrained")}
    worst = [c for c in every if c in kept or c not in params | unchanging]
    assert {f"metrics/{m}.json:train_seconds" for m in model_ids()} <= set(worst), worst
    assert set(kept) <= set(worst) and len(worst) <= MAX_EXP_COLUMNS, worst


def _flat(tree: dict, prefix: str = "") -> list[str]:
    """The dotted keys of a params tree, as `dvc exp show` names its params columns."""
    return [key for name, value in tree.items()
            for key in (_flat(value, f"{prefix}{name}.") if isinstance(value, dict) and value
                        else [f"{prefix}{name}"])]
