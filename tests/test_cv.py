"""`vitbench cv`: the folds as queued DVC experiments, and the pooled summary read back."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vitbench.core import stats
from vitbench.experiments.cv import plan_cv, verdict
from vitbench.core.errors import VitbenchError

REPO = Path(__file__).resolve().parents[1]
LR = "cnn.transfer.lr=1.0e-9"   # the CNN stays at its initial weights
# summary lines: TINY has cnn.pretrained false, so the CNN is marked as trained from random init
LINES = {"vit_scratch": "vit_scratch", "cnn_transfer": "cnn_transfer@random_init"}


def test_plan_names_the_folds_and_checks_before_queueing(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    seed = yaml.safe_load((REPO / "params.yaml").read_text())["seed"]
    points = plan_cv(3, tmp_path, ["train.epochs=2"])
    assert [p.name for p in points] == [f"t-epochs-2-folds-3-fold-{i}-seed-{seed}" for i in range(3)]
    assert points[1].overrides() == ["train.epochs=2", "split.folds=3", "split.fold=1", f"seed={seed}"]
    assert [p.seed for p in plan_cv(2, tmp_path, seeds=2)] == [1, 2, 1, 2]
    for args, message in (((1,), "at least 2 folds"),
                          ((2, ["train.epochs=2,3"]), "one value per key"),
                          ((2, ["split.fold=1"]), "set by vitbench cv itself"),
                          ((2, ["split.val=0.6"]), "split.val = 0.6 is not allowed")):
        with pytest.raises(VitbenchError, match=message):
            plan_cv(*args, root=tmp_path) if len(args) == 1 else plan_cv(args[0], tmp_path, args[1])


def _summary(acc: dict[str, float], p: float, at_chance: tuple[str, ...] = (),
             t_p: float = 0.04) -> dict:
    kinds = {"cnn_finetuned": "CNN", "vit_finetuned": "ViT"}
    models = {m: {"display_name": m, "kind": kinds[m], "accuracy": a, "chance_p": 0.5 if m in at_chance else 1e-9,
                  "at_chance": m in at_chance} for m, a in acc.items()}
    diff = acc["vit_finetuned"] - acc["cnn_finetuned"]
    return {"models": models, "chance": 0.1, "versus": {
        "best_cnn": "cnn_finetuned", "best_vit": "vit_finetuned", "images": 2300, "a_minus_b": diff,
        "ci_low": diff - 0.02, "ci_high": diff + 0.02, "p_value": p, "t_test_p": t_p}}


def test_verdict_sentences() -> None:
    won = verdict(_summary({"cnn_finetuned": 0.89, "vit_finetuned": 0.92}, 0.001))
    assert won.startswith("The ViT is better: vit\\_finetuned beats cnn\\_finetuned over all 2300")
    lost = verdict(_summary({"cnn_finetuned": 0.92, "vit_finetuned": 0.89}, 0.001))
    assert lost.startswith("The CNN is better: cnn\\_finetuned beats")
    assert "(ViT 89.0%, CNN 92.0%, McNemar p = 0.001" in lost and "the ViT's lead -5.0 to -1.0" in lost
    assert "new training set" not in lost                   # the fold-level test agrees
    shaky = verdict(_summary({"cnn_finetuned": 0.92, "vit_finetuned": 0.89}, 0.001, t_p=0.2))
    assert shaky.endswith("the lead holds on these images, a new training set may shrink it.")
    open_ = verdict(_summary({"cnn_finetuned": 0.90, "vit_finetuned": 0.91}, 0.3))
    assert open_.startswith("Undecided: even all 2300 images cannot tell")
    assert open_.endswith("the ViT's lead -1.0 to +3.0 points (95% CI).")
    void = verdict(_summary({"cnn_finetuned": 0.10, "vit_finetuned": 0.91}, 1e-12, ("cnn_finetuned",)))
    assert void.startswith("No verdict: the best CNN, cnn\\_finetuned (10.0%), is at chance")
    assert "not evidence for the other kind" in void


def test_the_summary_states_every_difference_in_inputs_and_budget() -> None:
    from vitbench.experiments.cv import footing

    summary = _summary({"cnn_finetuned": 0.89, "vit_finetuned": 0.92}, 0.001)
    assert footing(summary) is None                 # no budgets: nothing claimed
    summary["models"]["cnn_finetuned"]["budget"] = {
        "image_size": 160, "pretrained": True, "steps_run": 500, "epochs_run": 12,
        "train_seconds": 300.0, "params_total": 2_270_794}
    summary["models"]["vit_finetuned"]["budget"] = {
        "image_size": 160, "pretrained": True, "steps_run": 500, "epochs_run": 12,
        "train_seconds": 900.0, "params_total": 5_526_346}
    assert footing(summary) == (
        "**Like for like** in inputs, weights and training length (both: 160 px inputs, "
            "pretrained weights, 500 optimizer steps (12 epochs) in the last training phase). "
            "Training took the CNN 5 min 0 s and the ViT 15 min 0 s; the CNN has 2.27 M "
            "parameters, the ViT 5.53 M.")


# --- with DVC: two real tiny folds ---------------------------------------------------------------

@pytest.fixture(scope="module")
def folds_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`vitbench cv --folds 2 --model vit_scratch --model cnn_transfer --jobs 2` on the tiny project, the
    CNN left at its initial weights (learning rate 1e-9): two real experiments."""
    from conftest import bin_path, make_project_copy
    from dvc_project import TINY, commit, run, set_params

    project = make_project_copy(tmp_path_factory.mktemp("cv") / "project")
    set_params(project, {**TINY, "evaluate": {**TINY["evaluate"], "robustness": False}})
    commit(project, "tiny params")
    proc = run(project, bin_path("vitbench"), "cv", "--folds", "2", "--model", "vit_scratch",
               "--model", "cnn_transfer", "-S", LR, "--jobs", "2", timeout=1800)
    return project, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(3600)   # two experiments of the whole DAG; slow on a loaded 2-core machine
def test_cv_pools_every_image_once(folds_run: tuple[Path, str]) -> None:
    from dvc_project import run
    from test_sweep import exp_rev

    project, output = folds_run
    summary = json.loads((project / "plots/cv/summary.json").read_text())
    assert not (project / "data/clean").exists(), "the workspace is untouched: experiments ran"
    names = [p.name for p in plan_cv(2, project, [LR])]
    assert len(names) == 2
    preds = {}
    for name in names:
        rev = exp_rev(project, name)
        for model in ("vit_scratch", "cnn_transfer"):
            text = run(project, "git", "show", f"{rev}:plots/{model}/eval/predictions.csv").stdout
            preds.setdefault(model, []).append(pd.read_csv(pd.io.common.StringIO(text), dtype=str,
                                                           keep_default_na=False))
        manifest = run(project, "git", "show", f"{rev}:metrics/clean.json").stdout
        kept = json.loads(manifest)["kept"]
    assert summary["folds"] == 2 and summary["test_images"] == kept
    for model, frames in preds.items():
        df = pd.concat(frames)
        assert len(df) == df["path"].nunique() == kept      # every image tested exactly once
        correct = int((df["actual"] == df["predicted"]).sum())
        s = summary["models"][LINES[model]]
        assert (s["correct"], s["total"]) == (correct, kept)
        assert s["accuracy"] == pytest.approx(correct / kept)
        ci = stats.accuracy_interval(correct, kept)
        assert (s["ci_low"], s["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert [f["total"] for f in s["per_fold"]] == [len(f) for f in frames]
    chance = stats.majority_rate(pd.concat(preds["cnn_transfer"])["actual"].to_numpy())
    assert summary["chance"] == pytest.approx(chance)
    cnn = summary["models"][LINES["cnn_transfer"]]
    assert cnn["at_chance"], "lr 1e-9: the CNN never learned"
    assert cnn["display_name"] == "VGG16 (transfer, random init)"
    assert summary["cnn_vs_vit_p"] is not None and summary["t_test_p"] is not None
    text = (project / "plots/cv/summary.md").read_text()
    assert summary["verdict"] in text and summary["verdict"].startswith("No verdict: the best CNN")
    assert "(at chance)" in text and summary["verdict"] in output
    assert "**Not like for like:** the CNN saw 32 px inputs, the ViT 24 px" in text   # TINY sizes
    assert (project / "plots/cv/summary.png").stat().st_size > 10_000


def test_more_folds_than_the_cleaned_images_allow_are_refused_before_queueing(tmp_path: Path) -> None:
    from test_splitting import make_clean, plant_groups

    from vitbench.experiments.cv import check_workspace_folds
    from vitbench.core.paths import Paths

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"]["source"] = str(tmp_path / "photos")     # not the seeded demo
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    check_workspace_folds(5, tmp_path)                          # no data/clean yet: nothing to check
    clean = make_clean(Paths(tmp_path), {"a": 12, "b": 6})
    plant_groups(Paths(tmp_path), clean, {"b": [4, 2]})         # b: 2 groups
    check_workspace_folds(2, tmp_path)
    with pytest.raises(VitbenchError, match=r"split.folds = 3 needs .*'b' \(2\).*nothing was queued"):
        check_workspace_folds(3, tmp_path)
    check_workspace_folds(3, tmp_path, ["split.near_duplicate_bits=null"])   # may differ: skipped
