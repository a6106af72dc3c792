"""`vitbench sweep` queues one DVC experiment per grid point and seed; `vitbench summarize --by`
reads a real tiny sweep back; the test split does not depend on the training size."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from vitbench.core import config
from vitbench.data.splitting import split_dataset
from vitbench.core.errors import VitbenchError
from vitbench.core.paths import Paths
from vitbench.experiments.sweep_figure import draw_sweep
from vitbench.experiments.sweep import parse_grid, plan
from vitbench.experiments.sweep_summary import SweepRun, crossover, render, summarize_by

RAW = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


# --- the grid ------------------------------------------------------------------------------------

def test_grid_names_and_overrides() -> None:
    grid = parse_grid(["split.max_train_per_class=5,null", "vit_ft.image_size=32,64"], RAW)
    points = plan(grid, [1, 2], RAW)
    assert [p.name for p in points] == [
        f"mtpc-{n}-vf-is-{s}-seed-{seed}" for n in ("5", "all") for s in (32, 64) for seed in (1, 2)]
    assert points[2].overrides() == ["split.max_train_per_class=5", "vit_ft.image_size=64", "seed=1"]
    assert plan(parse_grid(["split.val=0.1"], RAW), [1], RAW)[0].name == "val-0.1-seed-1"


@pytest.mark.parametrize("specs, message", [
    (["split.max_train_per_clas=5"], "did you mean split.max_train_per_class?"),
    (["max_train_per_class=5"], "did you mean split.max_train_per_class?"),
    (["split.max_train_per_class="], "an empty value list"),
    (["split.max_train_per_class=5,,10"], "an empty value"),
    (["split.max_train_per_class=5,10,5"], "the value '5' is listed twice"),
    (["train.epochs=1", "train.epochs=2"], "is given twice"),
    (["split"], "expected KEY=V1,V2"),
    (["seed=1,2"], "--seeds N"),
    (["vit.mlp_head=[64]"], "scalar values"),
    (["augment.rotation=15,15.0"], "the value '15.0' is listed twice ('15' is the same value)"),
])
def test_bad_grids_are_refused(specs: list[str], message: str) -> None:
    with pytest.raises(VitbenchError, match=re.escape(message)):
        parse_grid(specs, RAW)


def test_an_invalid_grid_point_is_refused_before_queueing() -> None:
    with pytest.raises(VitbenchError, match="split.max_train_per_class=0 is not a valid params.yaml"):
        plan(parse_grid(["split.max_train_per_class=5,0"], RAW), [1], RAW)


def test_values_are_checked_as_dvc_writes_them() -> None:
    """DVC parses `-S` values with Hydra's grammar, not YAML's: `010` is written as the string
    '010' (YAML 1.1 would read 8); the grid point is checked with that value."""
    with pytest.raises(VitbenchError, match="train.epochs = '010' is not allowed; expected an integer "
                                            r"\(DVC writes 010 as the string '010', not a number\)"):
        plan(parse_grid(["train.epochs=010"], RAW), [1], RAW)


# --- the test split at every training size ------------------------------------------------------

def test_test_and_val_splits_do_not_depend_on_the_training_size(tmp_path: Path) -> None:
    """Through the split stage's own function: only train is cut by max_train_per_class, and a
    smaller training set is a subset of a larger one; val and test stay the same images."""
    from test_splitting import make_clean, split_of

    paths = Paths(tmp_path)
    make_clean(paths, {"a": 40, "b": 23, "c": 12})
    sets = {}
    for cap in (None, 10, 5, 2, 1):
        split_dataset(config.section_with("split", val=0.15, test=0.15, max_train_per_class=cap), 3, paths)
        sets[cap] = split_of(paths)
    for cap in (10, 5, 2, 1):
        assert sets[cap]["test"] == sets[None]["test"] and sets[cap]["val"] == sets[None]["val"]
    chain = [sets[c]["train"] for c in (1, 2, 5, 10, None)]
    assert all(small < big for small, big in zip(chain, chain[1:]))
    assert len(sets[5]["train"]) == 15 and len(sets[1]["train"]) == 3


# --- the crossover sentence ---------------------------------------------------------------------

def rows(diffs: list[float], ps: list[float | None]) -> list[dict]:
    sizes = [5, 10, 25, 50, 100]
    return [{"value": v, "label": f"{v} images per class", "difference": d, "p_value": p}
            for v, d, p in zip(sizes, diffs, ps)]


def test_crossover_sentences() -> None:
    by = "split.max_train_per_class"
    up = crossover(rows([-0.2, -0.1, 0.02, 0.1, 0.2], [0.001, 0.3, 0.6, 0.01, 0.001]), by)
    assert up["sentence"] == ("the best ViT is ahead of the best CNN from 25 images per class on "
                              "(p < 0.05 at 50 and 100)")[:-1] + ")." and up["from"] == 25
    assert up["significant_at"] == [50, 100]
    never = crossover(rows([-0.2, 0.1, -0.1, -0.1, -0.05], [0.001, 0.3, 0.6, 0.01, 0.2]), by)
    assert never["sentence"].startswith("no crossover in the range tried") and never["from"] is None
    assert "the best CNN is significantly better at 5 and 50 images per class" in never["sentence"]
    always = crossover(rows([0.1, 0.1, 0.1, 0.1, 0.1], [0.2] * 5), by)
    assert always["sentence"].startswith("no crossover in the range tried: the best ViT is ahead")
    assert "not significant at any of them" in always["sentence"]
    last = crossover(rows([-0.1, -0.1, -0.1, -0.1, 0.1], [None] * 5), by)
    assert last["sentence"] == "the best ViT is ahead of the best CNN only at 100 images per class."


def sweep_run(value: object, seed: int, acc: dict[str, float], rev: str = "0" * 40,
              names: dict[str, str] | None = None) -> SweepRun:
    """A finished experiment of a sweep over train.epochs, as `sweep_runs` reads it."""
    metrics = {m: {"accuracy": a, "kind": "CNN" if m.startswith("cnn") else "ViT",
                   "display_name": (names or {}).get(m, m)} for m, a in acc.items()}
    params = {**RAW, "seed": seed, "train": {**RAW["train"], "epochs": value}}
    return SweepRun(f"e-{value}-seed-{seed}", rev, seed, value, metrics, params, None)


def test_summarize_by_a_key_that_was_not_swept_says_so() -> None:
    runs = [sweep_run(5, 1, {"cnn_finetuned": 0.6, "vit_scratch": 0.5}),
            sweep_run(5, 2, {"cnn_finetuned": 0.7, "vit_scratch": 0.4})]
    with pytest.raises(VitbenchError, match="nothing was swept: every finished experiment .2. has "
                                            "train.epochs = 5"):
        summarize_by(runs, "train.epochs")


def test_a_best_model_at_chance_decides_no_crossover(tmp_path: Path) -> None:
    """At 1 epoch the ViT is ahead but the best CNN answers 20 of 40 (chance): that value decides
    nothing; at 5 epochs both are above chance and the ViT is behind. Names are escaped."""
    from test_seeds import commit_predictions

    low = commit_predictions(tmp_path, {"cnn_finetuned": 20, "vit_scratch": 30})
    high = commit_predictions(tmp_path, {"cnn_finetuned": 38, "vit_scratch": 34})
    evil = {"vit_scratch": "<img src=x onerror=alert(1)> $\\nope$"}
    summary = summarize_by([sweep_run(1, 1, {"cnn_finetuned": 0.5, "vit_scratch": 0.75}, low, evil),
                            sweep_run(5, 1, {"cnn_finetuned": 0.95, "vit_scratch": 0.85}, high, evil)],
                           "train.epochs", tmp_path)
    cnn = summary["models"]["cnn_finetuned"]["points"]
    assert [p["at_chance"] for p in cnn] == [True, False]
    assert [r["void"] for r in summary["versus"]] == [True, False]
    sentence = summary["crossover"]["sentence"]
    assert sentence.startswith("no crossover in the range tried: the best ViT is not ahead")
    assert "no verdict at 1 epochs" in sentence
    text = render(summary)
    assert "50.0% (at chance)" in text and "(at chance: no verdict)" in text
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert draw_sweep(summary, tmp_path / "curve.png").stat().st_size > 0   # the name, not mathtext


def test_crossover_ignores_values_decided_by_a_model_at_chance() -> None:
    void = [dict(r, void=i < 2) for i, r in enumerate(rows([0.2, 0.1, -0.1], [None] * 3))]
    assert crossover(void, "split.max_train_per_class")["sentence"].startswith(
        "no crossover in the range tried: the best ViT is not ahead of the best CNN at 25 images")
    every = [dict(r, void=True) for r in rows([0.2, 0.1], [None] * 2)]
    assert crossover(every, "split.max_train_per_class")["sentence"] == (
        "no verdict at any value tried: the best CNN or ViT is at chance level at 5 and 10 images per class.")


# --- with DVC ------------------------------------------------------------------------------------

def names_and_params(project: Path) -> dict[str, dict]:
    """Every experiment `dvc exp show` lists (queued ones included): name -> params.yaml."""
    from vitbench.experiments.queue import walk
    from dvc_project import run

    show = json.loads(run(project, "dvc", "exp", "show", "--json").stdout)
    return {e["name"]: e["data"]["params"]["params.yaml"]["data"] for e, _ in walk(show)
            if e.get("name") and e.get("rev") != "workspace" and e["name"] != "main"}


@pytest.mark.slow
def test_sweep_queues_exactly_the_grid(tmp_path: Path) -> None:
    from conftest import bin_path, make_project_copy
    from dvc_project import run

    project = make_project_copy(tmp_path / "project")
    vitbench = bin_path("vitbench")
    run(project, vitbench, "sweep", "-S", "split.max_train_per_class=5,null", "--seeds", "2",
        "--model", "vit_scratch", "--no-start")
    queued = names_and_params(project)
    assert {n: (p["seed"], p["split"]["max_train_per_class"]) for n, p in queued.items()} == {
        "mtpc-5-seed-1": (1, 5), "mtpc-5-seed-2": (2, 5),
        "mtpc-all-seed-1": (1, None), "mtpc-all-seed-2": (2, None)}
    assert all(p["train"] == RAW["train"] for p in queued.values())   # nothing else changed
    # refused, with nothing more queued: a name that exists, an unknown key
    taken = run(project, vitbench, "sweep", "-S", "split.max_train_per_class=10,5", "--no-start", check=False)
    assert taken.returncode == 2 and "already exist: mtpc-5-seed-1" in taken.stderr
    unknown = run(project, vitbench, "sweep", "-S", "train.epoch=1,2", "--no-start", check=False)
    assert unknown.returncode == 2 and "did you mean train.epochs?" in unknown.stderr
    assert set(names_and_params(project)) == set(queued)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True,
                            text=True, check=True).stdout
    assert status == ""   # the workspace is untouched
    run(project, "dvc", "queue", "remove", "--all")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One queue, four real tiny experiments of one commit (TINY: cnn.pretrained false):
    `vitbench seeds --seeds 1,2 --model vit_scratch` (seed-1, seed-2: every training image) after
    two sweeps at 2 images per class, vit_scratch (mtpc-2-seed-1) and cnn_finetuned from random
    init at another cnn.image_size (mtpc-2-c-is-40-seed-1)."""
    from conftest import bin_path, make_project_copy
    from dvc_project import TINY, commit, run, set_params
    from vitbench.experiments.queue import wait_for_queue

    project = make_project_copy(tmp_path_factory.mktemp("tiny_runs") / "project")
    set_params(project, {**TINY, "evaluate": {**TINY["evaluate"], "robustness": False}})
    commit(project, "tiny params")
    vitbench = bin_path("vitbench")
    run(project, vitbench, "sweep", "-S", "split.max_train_per_class=2", "-S", "cnn.image_size=40",
        "--model", "cnn_finetuned", "--no-start")
    run(project, vitbench, "sweep", "-S", "split.max_train_per_class=2", "--model", "vit_scratch",
        "--no-start")
    run(project, vitbench, "seeds", "--seeds", "1,2", "--jobs", "2", "--model", "vit_scratch",
        timeout=1500)
    wait_for_queue(project, timeout=900)   # the sweeps' too (FIFO: they started first)
    return project


@pytest.mark.slow
def test_two_seeds_end_to_end(tiny_runs: Path) -> None:
    """`vitbench summarize` counts the seed-N experiments only (not the sweeps' mtpc-*)."""
    from conftest import bin_path
    from dvc_project import run

    summary = json.loads(run(tiny_runs, bin_path("vitbench"), "summarize", "--json").stdout)
    assert summary["seeds"] == [1, 2]
    assert {m["n"] for m in summary["models"].values()} == {2}
    assert set(summary["models"]) == {"vit_scratch"}
    assert summary["winner"] is None   # one family: nothing to rank
    assert not (tiny_runs / "metrics" / "vit_finetuned.json").exists()   # the workspace is untouched
    text = run(tiny_runs, bin_path("vitbench"), "summarize").stdout
    assert "# Accuracy over 2 seeds" in text


@pytest.mark.slow
def test_summarize_by_a_real_tiny_sweep(tiny_runs: Path, tmp_path: Path) -> None:
    """Two lines from two sweeps and `vitbench seeds`: vit_scratch at 2 (one run: its Wilson
    interval) and at every image (seeds 1 and 2: the mean over them, the Wilson interval of their pooled predictions), and
    cnn_finetuned from random init at 2, paired with vit_scratch across the sweeps."""
    from conftest import bin_path
    from dvc_project import run

    project, vitbench = tiny_runs, bin_path("vitbench")
    summary = json.loads(run(project, vitbench, "summarize", "--by", "split.max_train_per_class",
                             "--json").stdout)

    def metrics_of(name: str, path: str) -> dict:
        return json.loads(run(project, "git", "show", f"{exp_rev(project, name)}:{path}").stdout)

    cnn = summary["models"]["cnn_finetuned@random_init"]
    assert cnn["display_name"] == "VGG16 (fine-tuned, random init, 40 px)"
    assert [(p["value"], p["runs"]) for p in cnn["points"]] == [(2, ["mtpc-2-c-is-40-seed-1"])]
    metrics = metrics_of("mtpc-2-c-is-40-seed-1", "metrics/cnn_finetuned.json")
    assert metrics["pretrained"] is False and cnn["points"][0]["mean"] == pytest.approx(metrics["accuracy"])
    assert [(r["value"], r["p_value"] is not None) for r in summary["versus"]] == [(2, True)]
    points = summary["models"]["vit_scratch"]["points"]
    assert [(p["value"], p["n"], sorted(p["runs"])) for p in points] == [
        (2, 1, ["mtpc-2-seed-1"]), (None, 2, ["seed-1", "seed-2"])]
    table = pd.read_csv(project / "plots" / "sweep" / "split.max_train_per_class.csv")
    one, both = points
    # one run: that experiment's accuracy and its Wilson interval over the test images
    metrics = metrics_of("mtpc-2-seed-1", "metrics/vit_scratch.json")
    split = metrics_of("mtpc-2-seed-1", "metrics/split.json")
    assert one["mean"] == pytest.approx(metrics["accuracy"]) and one["ci_kind"] == "Wilson over test images"
    assert (one["ci_low"], one["ci_high"]) == (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"])
    assert split["train"] == 2 * split["classes"] and one["x"] == 2
    assert summary["chance"] == pytest.approx(1 / split["classes"])   # the figure's chance line
    # two seeds: the mean of the two experiments' accuracies and the Wilson interval of their
    # test predictions pooled
    accs = [metrics_of(n, "metrics/vit_scratch.json")["accuracy"] for n in ("seed-1", "seed-2")]
    preds = [pd.read_csv(io.StringIO(run(project, "git", "show", f"{exp_rev(project, n)}:"
                                         "plots/vit_scratch/eval/predictions.csv").stdout))
             for n in ("seed-1", "seed-2")]
    correct = sum(int((df["actual"] == df["predicted"]).sum()) for df in preds)
    ci = wilson(correct, sum(len(df) for df in preds))
    assert both["mean"] == pytest.approx(sum(accs) / 2) and both["ci_kind"].startswith("Wilson over the pooled")
    assert (both["ci_low"], both["ci_high"]) == pytest.approx(ci, abs=1e-6)
    splits = [metrics_of(n, "metrics/split.json") for n in ("seed-1", "seed-2")]
    assert both["x"] == pytest.approx(sum(s["train"] / s["classes"] for s in splits) / 2) and both["x"] > 2
    assert table["vit_scratch"].tolist() == pytest.approx([one["mean"], both["mean"]])
    assert summary["crossover"]["sentence"].startswith(("the best ViT", "no crossover in the range",
                                                        "no verdict"))
    assert (project / "plots" / "sweep" / "split.max_train_per_class.png").stat().st_size > 10_000
    # the cost panel that --by train.epochs adds: accuracy against each point's mean train seconds
    assert all(p["train_seconds"] > 0 for s in summary["models"].values() for p in s["points"])
    single = draw_sweep(summary, tmp_path / "one.png")   # not in the shared project
    with_cost = draw_sweep(summary, tmp_path / "cost.png", cost=True)
    with Image.open(single) as a, Image.open(with_cost) as b:
        assert b.width > 1.6 * a.width
    drawn = json.loads(run(project, "dvc", "plots", "show", "--json", "-x", "x", "-y", "vit_scratch",
                           "plots/sweep/split.max_train_per_class.csv").stdout)
    values = drawn["data"]["plots/sweep/split.max_train_per_class.csv"][0]["content"]["data"]["values"]
    assert [float(v["vit_scratch"]) for v in values] == pytest.approx([p["mean"] for p in points])
    assert not (project / "metrics" / "vit_scratch.json").exists()   # the workspace is untouched


def wilson(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval, written out (Wilson 1927)."""
    p, zz = correct / total, z * z / total
    centre, half = (p + zz / 2) / (1 + zz), z * math.sqrt(p * (1 - p) / total + zz / (4 * total)) / (1 + zz)
    return centre - half, centre + half


def exp_rev(project: Path, name: str) -> str:
    """The commit of experiment `name`: DVC keeps each under refs/exps/<baseline>/<name> (what
    `dvc exp show --json` reports as its rev, without starting DVC)."""
    from dvc_project import run

    refs = run(project, "git", "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)")
    revs = [rev for ref, rev in (line.split() for line in refs.stdout.splitlines())
            if ref.rsplit("/", 1)[-1] == name]
    assert len(revs) == 1, f"experiment {name!r}: {refs.stdout}"
    return revs[0]
