"""Repeated runs: `vitbench seeds` queues one DVC experiment per seed; `vitbench summarize`
reads them back (parsing on a hand-made `dvc exp show` document; end to end on a tiny run
in tests/test_sweep.py, which shares its experiments with the sweep's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitbench.models import registry
from vitbench.experiments.seeds import experiments, render, summarize


def exp(name: str, seed: int, acc: dict[str, float], rev: str = "0" * 40) -> dict:
    """An experiment as `dvc exp show --json` lists it: metrics/<id>.json holds numbers only (the
    names and kinds are in metrics/<id>_detail.json of the experiment's commit `rev`)."""
    metrics = {f"metrics/{m}.json": {"data": {"accuracy": a, "pretrained": False}}
               for m, a in acc.items()}
    return {"rev": rev, "name": name,
            "data": {"metrics": metrics, "params": {"params.yaml": {"data": {"seed": seed}}}}}


def commit_details(root: Path, model_ids: list[str]) -> str:
    """A git commit in `root` holding metrics/<id>_detail.json per model, as evaluate writes its
    identity fields (`registry.identity`) and display name. Returns the commit."""
    return commit_predictions(root, dict.fromkeys(model_ids, 0))


SHOW = [
    {"rev": "workspace", "name": None, "data": {"metrics": {}, "params": {}}},
    {"rev": "1" * 40, "name": "main", "data": {"metrics": {}, "params": {}}, "experiments": [
        {"revs": [exp("seed-2", 2, {"cnn_finetuned": 0.70, "vit_finetuned": 0.80})]},
        {"revs": [exp("seed-1", 1, {"cnn_finetuned": 0.75, "vit_finetuned": 0.85})]},
        {"revs": [exp("other", 7, {"cnn_finetuned": 0.9, "vit_finetuned": 0.1})]},
    ]},
]


def test_summary_of_hand_made_experiments(tmp_path: Path) -> None:
    rev = commit_details(tmp_path, ["cnn_finetuned", "vit_finetuned"])
    show = json.loads(json.dumps(SHOW).replace("0" * 40, rev))
    runs = experiments(show, root=tmp_path)
    assert [(r.name, r.seed) for r in runs] == [("seed-1", 1), ("seed-2", 2)]
    assert runs[0].kinds == {"cnn_finetuned": "CNN", "vit_finetuned": "ViT"}   # from the details
    summary = summarize(runs)
    cnn = summary["models"]["cnn_finetuned"]
    assert cnn["n"] == 2 and cnn["mean"] == pytest.approx(0.725)
    assert cnn["std"] == pytest.approx(0.0353553, rel=1e-5)
    assert cnn["ci_low"] < 0.70 and cnn["ci_high"] > 0.75
    assert summary["ranking_holds"] and summary["winner"] == "ViT"
    assert "beats the best of the other family in all 2 seeds" in render(summary)


def test_only_finished_experiments_count() -> None:
    """A running, queued or failed experiment shows its baseline's metrics in `dvc exp show`
    (seen with dvc 3 while `vitbench seeds` ran): it must not count as its seed's result."""
    def queued(name: str, seed: int, state: str) -> dict:
        return {"executor": {"state": state, "name": "dvc-task"}, "name": name,
                "revs": [exp(name, seed, {"cnn_finetuned": 0.9, "vit_finetuned": 0.1})]}

    show = [{"rev": "1" * 40, "name": "main", "data": {"metrics": {}, "params": {}}, "experiments": [
        queued("seed-4", 4, "running"), queued("seed-5", 5, "queued"), queued("seed-6", 6, "failed"),
        queued("seed-1", 1, "success"), {"revs": [exp("seed-2", 2, {"cnn_finetuned": 0.5})]}]}]
    assert [(r.name, r.seed) for r in experiments(show)] == [("seed-1", 1), ("seed-2", 2)]


def test_a_ranking_that_flips_is_reported(tmp_path: Path) -> None:
    rev = commit_details(tmp_path, ["cnn_transfer", "vit_scratch"])
    show = [exp("seed-1", 1, {"cnn_transfer": 0.8, "vit_scratch": 0.6}, rev),
            exp("seed-2", 2, {"cnn_transfer": 0.5, "vit_scratch": 0.7}, rev)]
    summary = summarize(experiments(show, root=tmp_path))
    assert not summary["ranking_holds"]
    assert "does NOT hold in every seed" in render(summary)


@pytest.mark.parametrize("given, message", [
    ("1,1", "seed(s) 1 given more than once"),
    ("3,2,3,2", "seed(s) 2, 3 given more than once"),
    ("", "no seeds given"),
    (" , ", "no seeds given"),
])
def test_duplicate_or_no_seeds_are_refused_before_dvc_is_called(tmp_path: Path, given: str,
                                                                message: str) -> None:
    """In a folder that is no DVC project, any `dvc exp run --queue` would fail with dvc's own
    error: this message shows that the seeds were refused first, so nothing was queued."""
    from click.testing import CliRunner

    from vitbench.cli import main

    result = CliRunner().invoke(main, ["seeds", "--seeds", given, "--root", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_invalid_seed_is_refused_before_anything_is_queued(tmp_path: Path) -> None:
    """`--seeds 99999999999` would queue an experiment that fails in its first stage: the seed is
    validated with params.yaml as a stage validates it, before dvc is called (no DVC project
    here, so any dvc call would fail with dvc's own error)."""
    import shutil

    from click.testing import CliRunner

    from vitbench.cli import main

    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    result = CliRunner().invoke(main, ["seeds", "--seeds", "1,99999999999", "--root", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "seed 99999999999 is not allowed" in result.output and "nothing was queued" in result.output
    assert "seed = 99999999999" in result.output


# --- the chance guard and escaping ---------------------------------------------------------------

def commit_predictions(root: Path, right: dict[str, int], total: int = 40) -> str:
    """A git commit in `root` holding plots/<id>/eval/predictions.csv and
    metrics/<id>_detail.json per model, as evaluate writes them: `total` test images of two
    balanced classes, the first `right[id]` predicted right; the model's identity fields
    (`registry.identity`) with its id as display name. Returns the commit (an experiment's rev)."""
    import subprocess

    if not (root / ".git").is_dir():
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    for model_id, n in right.items():
        actual = ["a" if i % 2 else "b" for i in range(total)]
        rows = [f"img{i}.png,{y},{y if i < n else ('b' if y == 'a' else 'a')}" for i, y in enumerate(actual)]
        path = root / "plots" / model_id / "eval" / "predictions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("path,actual,predicted\n" + "\n".join(rows) + "\n")
        if model_id in registry.model_ids():
            detail = root / "metrics" / f"{model_id}_detail.json"
            detail.parent.mkdir(exist_ok=True)
            detail.write_text(json.dumps({"display_name": model_id, **registry.identity(model_id)}))
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "predictions"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_a_model_at_chance_never_wins_a_seed(tmp_path: Path) -> None:
    """The best CNN answers 21 of 40 on two balanced classes (chance): no seed has a winner and
    the verdict says so, though its accuracy is below the ViT's; the table marks it."""
    show = []
    for seed in (1, 2):
        entry = exp(f"seed-{seed}", seed, {"cnn_finetuned": 21 / 40, "vit_finetuned": 38 / 40})
        entry["rev"] = commit_predictions(tmp_path, {"cnn_finetuned": 21, "vit_finetuned": 38})
        show.append(entry)
    summary = summarize(experiments(show, root=tmp_path), tmp_path)
    assert summary["models"]["cnn_finetuned"]["at_chance"] is True
    assert summary["models"]["vit_finetuned"]["at_chance"] is False
    assert summary["models"]["vit_finetuned"]["chance_p"] < 1e-6
    assert [s["winner"] for s in summary["per_seed"]] == ["at chance", "at chance"]
    assert summary["winner"] is None and not summary["ranking_holds"]
    text = render(summary)
    assert "No verdict in 2 of 2 seeds" in text and r"cnn\_finetuned (at chance)" in text
    assert "beats" not in text


def test_model_names_are_escaped_in_the_seeds_summary() -> None:
    entry = exp("seed-1", 1, {})
    entry["data"]["metrics"] = {f"metrics/{m}.json": {"data": {"accuracy": 0.5}}
                                for m in ("<img src=x onerror=alert(1)>", "**bold**")}
    runs = experiments([entry])
    text = render(summarize(runs))
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "**bold**" not in text and r"\*\*bold\*\*" in text


def test_kinds_come_from_the_detail_file_or_from_an_older_experiments_metrics(tmp_path: Path) -> None:
    """An experiment from before metrics/<id>_detail.json had the kind in metrics/<id>.json; one
    with neither is refused, naming the file."""
    from vitbench.core.errors import VitbenchError

    rev = commit_predictions(tmp_path, {"other": 1})            # no detail file in this commit
    old = exp("seed-1", 1, {"cnn_finetuned": 0.7}, rev)
    old["data"]["metrics"]["metrics/cnn_finetuned.json"]["data"]["kind"] = "CNN"
    assert experiments([old], root=tmp_path)[0].kinds == {"cnn_finetuned": "CNN"}
    with pytest.raises(VitbenchError, match=r"metrics/cnn_finetuned_detail\.json of experiment commit"):
        experiments([exp("seed-1", 1, {"cnn_finetuned": 0.7}, rev)], root=tmp_path)
