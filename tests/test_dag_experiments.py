"""Queued DVC experiments on the whole tiny DAG, as a user runs them: a queue of two, one of
which retrains every model (what `dvc exp show` then lists)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvc_project import run

pytestmark = pytest.mark.slow

MAX_EXP_COLUMNS = 60
DROP_DEPS = r"models/|plots/|metrics/\w+\.json$"   # `dvc exp show --drop`: the deps' hash columns


def test_queued_experiments_run_and_fit_exp_show(full_dag: Path, tmp_path: Path) -> None:
    """Two queued experiments run by `dvc queue start`: `-S train.epochs=2` (every model
    retrained) and a smaller scratch ViT. `dvc exp show --only-changed` over both stays within
    MAX_EXP_COLUMNS columns once the changed deps' hashes are dropped with the README's --drop.
    The queue runs them side by side (`dvc queue start -j 2`)."""
    from conftest import copy_built
    from vitbench.experiments.queue import wait_for_queue

    reproduced = copy_built(full_dag, tmp_path / "project")   # the suite's full `dvc repro`
    run(reproduced, "dvc", "exp", "run", "--queue", "-S", "train.epochs=2")
    run(reproduced, "dvc", "exp", "run", "--queue", "-S", "vit.image_size=12", "-S", "vit.patch_size=4")
    run(reproduced, "dvc", "queue", "start", "-j", "2")
    rows = wait_for_queue(reproduced, timeout=900, jobs=2)   # what `vitbench sweep` waits with
    assert [t.status for t in rows] == ["Success", "Success"], rows
    show = json.loads(run(reproduced, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(show)
    assert '"vit.image_size": 12' in text.replace("\n", "") or '"image_size": 12' in text
    header = run(reproduced, "dvc", "exp", "show", "--only-changed", "--md").stdout.splitlines()[0]
    columns = [c.strip() for c in header.strip().strip("|").split("|")]
    assert {"train.epochs", "vit.image_size"} <= set(columns), columns
    assert "metrics/vit_scratch.json:accuracy" in columns, columns
    assert not {"display_name", "kind", "family", "model"} & {c.split(":")[-1] for c in columns}
    deps = [c for c in columns if c.startswith(("models/", "plots/")) or c.endswith(".json")]
    assert len(columns) - len(deps) <= MAX_EXP_COLUMNS, columns
    kept = run(reproduced, "dvc", "exp", "show", "--only-changed", "--md", "--drop", DROP_DEPS)
    assert kept.stdout.splitlines()[0].count("|") - 1 == len(columns) - len(deps), kept.stdout
