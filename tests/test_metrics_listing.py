"""`dvc metrics show` on the demo's metrics: few keys, numbers only; the data stages' counts stay
one target away (`dvc metrics show/diff`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from dvc_project import commit, run

MAX_COLUMNS = 31    # Path and at most 30 distinct keys (the contract)
COUNTERS = ("metrics/fetch.json", "metrics/clean.json", "metrics/split.json")


@pytest.mark.slow
def test_metrics_show_stays_narrow_and_the_counters_stay_reachable(project: Path) -> None:
    """On the metrics the demo's `dvc repro` wrote (committed in this repo)."""
    (project / "metrics").mkdir(exist_ok=True)
    for path in (REPO / "metrics").glob("*.json"):
        shutil.copy(path, project / "metrics" / path.name)
    header = run(project, "dvc", "metrics", "show").stdout.splitlines()[0].split()
    assert len(header) <= MAX_COLUMNS, f"{len(header)} columns: {header}"
    assert {"accuracy", "f1_macro", "chance_p", "steps_run", "cnn_vs_vit_p"} <= set(header)
    shown = json.loads(run(project, "dvc", "metrics", "show", "--json").stdout)
    strings = {(path, k) for path, entry in next(iter(shown.values()))["data"].items()
               for k, v in entry["data"].items() if not isinstance(v, (int, float))}
    assert not strings, f"the committed demo metrics are not numbers only: re-run the demo; {strings}"

    assert not any(h.split(".")[0] in ("skipped", "renamed", "removed", "converted", "train", "val",
                                       "near_duplicate_groups") for h in header)

    commit(project, "the demo's metrics")
    fetch = json.loads((project / "metrics/fetch.json").read_text())
    fetch["skipped"]["hidden"] += 3
    (project / "metrics/fetch.json").write_text(json.dumps(fetch))
    diff = json.loads(run(project, "dvc", "metrics", "diff", "--json", "--targets", *COUNTERS).stdout)
    assert diff["metrics/fetch.json"]["skipped.hidden"]["diff"] == 3
    split = json.loads(run(project, "dvc", "metrics", "show", "--json", "metrics/split.json").stdout)
    assert next(iter(split.values()))["data"]["metrics/split.json"]["data"]["train"] > 0
