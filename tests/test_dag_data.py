"""`dvc repro augment` in a project copy: the data half of the DAG, its metrics and its caching."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dvc_project import TINY, changed_stages, commit, run, set_params

pytestmark = pytest.mark.slow


def test_data_stages_run_and_cache(project: Path) -> None:
    set_params(project, {**TINY, "augment": {"copies": 1}})
    commit(project, "tiny params, one augmented copy per training image")
    out = run(project, "dvc", "repro", "augment")
    assert set(["fetch", "clean", "split", "augment"]) <= set(
        line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage"))

    clean = json.loads((project / "metrics" / "clean.json").read_text())
    assert clean["removed"]["corrupt"] > 0
    assert clean["removed"]["duplicate"] > 0
    assert clean["converted"]["rgba"] > 0
    assert clean["kept"] >= 10 * 12 - 5
    split = json.loads((project / "metrics" / "split.json").read_text())
    assert split["train"] + split["val"] + split["test"] + split.get("unused", 0) == clean["kept"]
    assert (project / "plots" / "augment_preview.png").stat().st_size > 10_000
    augmented = pd.read_csv(project / "data" / "augmented" / "train.csv")
    assert (augmented["augmented"] == 1).sum() == (augmented["augmented"] == 0).sum() == split["train"]
    commit(project, "data stages")

    set_params(project, {"augment": {"rotation": 30}})
    changed = changed_stages(project)
    assert "augment" in changed
    assert not changed & {"fetch", "clean", "split"}

    set_params(project, {"augment": {"rotation": 15}, "split": {"test": 0.3}})
    changed = changed_stages(project)
    assert "split" in changed
    assert not changed & {"fetch", "clean"}


def test_digits_source_gives_1797_images(project: Path) -> None:
    # 8x8 digits upscaled are near-duplicates of each other by dhash: grouping would keep whole
    # classes in one split, and split refuses the empty val split that leaves
    set_params(project, {**TINY, "dataset": {"source": "digits"},
                         "split": {**TINY["split"], "near_duplicate_bits": None}})
    commit(project, "digits")
    run(project, "dvc", "repro", "split")
    clean = json.loads((project / "metrics" / "clean.json").read_text())
    split = json.loads((project / "metrics" / "split.json").read_text())
    assert clean["kept"] == 1797
    assert split["classes"] == 10
    assert split["train"] + split["val"] + split["test"] + split.get("unused", 0) == 1797
    assert split["val"] > 0 and split["test"] > 0
