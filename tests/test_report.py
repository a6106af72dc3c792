"""The compare stage on evaluate outputs made with evaluate's own functions: winners, ties,
perfect and unsolved classes, models at chance, warnings about untrained "pretrained" models,
escaped class names, errors and atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitbench.evaluate.calibration import expected_calibration_error
from vitbench.core.config import Compare
from vitbench.models.registry import model_ids

MODEL_IDS = model_ids()
from vitbench.data.manifest import write_labels
from vitbench.core.errors import DataError
from vitbench.evaluate.evaluation import (chance_p, class_report, compute_metrics, predictions_table,
                                 split_headline, uncertainty)
from vitbench.core.fsutil import write_json
from vitbench.models import registry
from vitbench.core.paths import Paths
from vitbench.report.compare import compare

CLASSES = ["cat", "dog", "owl"]
NAMES = {"cnn_transfer": "MobileNetV2 (transfer)", "cnn_finetuned": "MobileNetV2 (fine-tuned)",
         "vit_scratch": "ViT from scratch", "vit_transfer": "ViT-B/32 (transfer)",
         "vit_finetuned": "ViT-B/32 (fine-tuned)"}
SIZES = {"cnn_transfer": 9.2, "cnn_finetuned": 9.2, "vit_scratch": 1.7, "vit_transfer": 350.0,
         "vit_finetuned": 350.0}
SPEED = {"cnn_transfer": 300.0, "cnn_finetuned": 300.0, "vit_scratch": 900.0, "vit_transfer": 40.0,
         "vit_finetuned": 40.0}
INPUT_PX = {"cnn": 96, "vit": 48, "vit_ft": 224}   # evaluate's image_size, by family
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
Y_LARGE = np.repeat(np.arange(3), 8)     # 24 test images: enough for a model above chance to lose
CFG = Compare(samples=4)
SEED = 1


def write_images(paths: Paths, classes: list[str] = CLASSES, y_true: np.ndarray = Y_TRUE) -> list[str]:
    """One small PNG per test row; returns their paths relative to the project root."""
    files = []
    for i, y in enumerate(y_true):
        rel = f"data/clean/{classes[y]}/{i:02d}.png"
        (paths.root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 50, 3), 60 * y + 40, np.uint8)).save(paths.root / rel)
        files.append(rel)
    return files


def write_evaluation(paths: Paths, model_id: str, y_pred: np.ndarray, files: list[str],
                     pretrained: bool | None = None, classes: list[str] = CLASSES,
                     y_true: np.ndarray = Y_TRUE) -> None:
    """What evaluate writes for one model whose predictions are `y_pred` (confidence 0.8), made
    with evaluate's own functions."""
    proba = np.full((len(y_pred), len(CLASSES)), 0.1)
    proba[np.arange(len(y_pred)), y_pred] = 0.8
    if pretrained is None:
        pretrained = model_id != "vit_scratch"
    identity = registry.identity(model_id)
    metrics = {"model": model_id, "display_name": NAMES[model_id], **identity,
               "image_size": INPUT_PX[identity["family"]], "preprocess": "tf",
               **compute_metrics(y_true, proba, len(CLASSES)),
               **uncertainty(y_true, y_pred, len(CLASSES), seed=0),
               "chance_p": chance_p(y_true, y_pred),
               "ece": expected_calibration_error(y_true, proba),
               "params_total": int(SIZES[model_id] * 250_000), "params_trainable": 1000,
               "size_mb": SIZES[model_id], "train_seconds": 12.0, "epochs_run": 3,
               "infer_images_per_second": SPEED[model_id], "pretrained": pretrained,
               "steps_run": 30 if identity["family"] == "vit" else 12}
    headline, detail = split_headline(metrics)
    write_json(paths.metrics_json(model_id), headline)
    write_json(paths.detail_json(model_id), detail)
    eval_dir = paths.eval_plots(model_id)
    eval_dir.mkdir(parents=True, exist_ok=True)
    class_report(y_true, y_pred, classes).to_csv(eval_dir / "report.csv", index=False)
    predictions_table(files, y_true, proba, classes).to_csv(eval_dir / "predictions.csv", index=False)


def with_errors(*wrong: int, y_true: np.ndarray = Y_TRUE) -> np.ndarray:
    """`y_true` with the rows at `wrong` moved to the next class."""
    y = y_true.copy()
    for i in wrong:
        y[i] = (y[i] + 1) % len(CLASSES)
    return y


DEFAULT_PREDICTIONS = {
    "cnn_transfer": with_errors(0, 4, 8),        # 75%
    "cnn_finetuned": with_errors(4),             # 91.7%, cat and owl: perfect recall
    "vit_scratch": with_errors(0, 1, 4, 8),      # 66.7%: above chance (33.3%), p = 0.019
    "vit_transfer": with_errors(0, 4),           # 83.3%
    "vit_finetuned": with_errors(8),             # 91.7%: ties with cnn_finetuned
}


@pytest.fixture
def project(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path / "proj")
    write_labels(CLASSES, paths.labels)
    files = write_images(paths)
    for model_id, y_pred in DEFAULT_PREDICTIONS.items():
        write_evaluation(paths, model_id, y_pred, files)
    paths.root.joinpath("files.json").write_text(json.dumps(files))
    return paths


def row_of(md: str, first_cell: str) -> str:
    """The markdown table row whose first cell is `first_cell`."""
    return next(line for line in md.splitlines()
                if line.startswith("|") and line.split("|")[1].strip() == first_cell)


def files_of(paths: Paths) -> list[str]:
    return json.loads(paths.root.joinpath("files.json").read_text())


def read_outputs(paths: Paths) -> tuple[dict, dict, str]:
    flat = json.loads(paths.metrics_json("compare").read_text())
    detail = json.loads(paths.metrics_json("compare_detail").read_text())
    return flat, detail, (paths.metrics / "compare.md").read_text()


@pytest.mark.slow
def test_compare_writes_every_output(project: Paths) -> None:
    returned = compare(CFG, SEED, project)
    flat, summary, md = read_outputs(project)
    assert summary == json.loads(json.dumps(returned))
    assert all(not isinstance(v, (dict, list)) for v in flat.values())     # dvc metrics: flat
    assert set(flat) == {"test_images", "vit_minus_cnn", "cnn_vs_vit_p", "models_at_chance"}
    assert flat["models_at_chance"] == 0 and flat["vit_minus_cnn"] == pytest.approx(0.0, abs=1e-9)
    assert all(isinstance(v, (int, float)) for v in flat.values())       # metrics: numbers only
    assert summary["winner"] == "undecided" and summary["models_at_chance"] == []
    assert len(summary["pairwise"]) == 10                  # every pair of the five models
    assert list(summary["models"]) == list(MODEL_IDS)
    assert summary["models"]["vit_scratch"]["accuracy"] == pytest.approx(8 / 12)
    assert summary["test_images"] == 12
    assert summary["warnings"] == []
    for name in ("accuracy_loss", "size_vs_accuracy", "per_class_f1", "predictions_grid"):
        assert (project.compare_plots / f"{name}.png").stat().st_size > 0
    for name in NAMES.values():
        assert name in md
    assert "WARNING" not in md


@pytest.mark.slow
def test_ties_report_every_best_model_in_pipeline_order(project: Paths) -> None:
    summary = compare(CFG, SEED, project)
    assert summary["best"]["accuracy"] == {"value": pytest.approx(11 / 12),
                                           "models": ["cnn_finetuned", "vit_finetuned"]}
    assert summary["best"]["f1_macro"]["models"] == ["cnn_finetuned", "vit_finetuned"]
    assert summary["cnn_vs_vit"]["winner"] == "undecided"
    assert summary["cnn_vs_vit"]["p_value"] == 1.0
    md = (project.metrics / "compare.md").read_text()
    assert "**MobileNetV2 (fine-tuned)** and **ViT-B/32 (fine-tuned)** (a tie)" in md
    table = row_of(md, "MobileNetV2 (fine-tuned)")
    assert "**91.7%**" in table


@pytest.mark.slow
def test_clear_winner_and_cost_in_the_conclusion(project: Paths) -> None:
    write_evaluation(project, "vit_finetuned", Y_TRUE, files_of(project))      # 100%
    summary = compare(CFG, SEED, project)
    assert summary["best"]["accuracy"]["models"] == ["vit_finetuned"]
    versus = summary["cnn_vs_vit"]
    assert (versus["best_cnn"], versus["best_vit"]) == ("cnn_finetuned", "vit_finetuned")
    assert versus["accuracy_difference"] == pytest.approx(1 / 12)
    assert (versus["vit_only_right"], versus["cnn_only_right"]) == (1, 0)
    assert versus["winner"] == "undecided"           # one image: far from significant
    md = (project.metrics / "compare.md").read_text()
    assert ("8.3 points ahead of the runner-up MobileNetV2 (fine-tuned) (91.7%; McNemar p = 1.00, "
            "not significant)") in md
    assert "38x larger (350.0 MB against 9.2 MB) and 7.5x slower" in md
    assert "**no significant difference** on 12 test images" in md
    assert f"About {versus['images_needed']:,} test images would be needed to resolve 8.3 points" in md


def large_project(root: Path, predictions: dict[str, np.ndarray]) -> Paths:
    """A project of Y_LARGE's 24 test images; models not in `predictions` get 2 errors a class."""
    paths = Paths(root)
    write_labels(CLASSES, paths.labels)
    files = write_images(paths, y_true=Y_LARGE)
    default = with_errors(0, 1, 8, 9, 16, 17, y_true=Y_LARGE)
    for model_id in MODEL_IDS:
        write_evaluation(paths, model_id, predictions.get(model_id, default), files, y_true=Y_LARGE)
    return paths


@pytest.mark.slow
def test_a_significant_difference_is_called_better_and_its_p_is_stored_unrounded(tmp_path: Path) -> None:
    cnn = with_errors(*range(0, 24, 3), 1, 4, y_true=Y_LARGE)      # 14/24: above chance, p = 0.010
    project = large_project(tmp_path / "proj", {"vit_finetuned": Y_LARGE,
                                                "cnn_transfer": cnn, "cnn_finetuned": cnn})
    summary = compare(CFG, SEED, project)
    versus = summary["cnn_vs_vit"]
    assert summary["models_at_chance"] == []
    assert (versus["vit_only_right"], versus["cnn_only_right"]) == (10, 0)
    assert versus["p_value"] == 2 * 0.5 ** 10                                  # exact McNemar
    assert versus["winner"] == "ViT"
    md = (project.metrics / "compare.md").read_text()
    assert "the **ViT** is better, by 41.7 accuracy points (McNemar exact p = 0.002" in md
    flat, detail, _ = read_outputs(project)
    assert flat["cnn_vs_vit_p"] == 2 * 0.5 ** 10 and detail["winner"] == "ViT"   # not 0.001953
    assert json.loads(project.metrics_json("compare_detail").read_text())["winner"] == "ViT"


@pytest.mark.slow
def test_perfect_classes_need_precision_and_recall_of_one(project: Paths) -> None:
    summary = compare(CFG, SEED, project)
    perfect = summary["perfect_classes"]
    # cnn_finetuned: one dog predicted as owl -> owl precision < 1, dog recall < 1; cat perfect
    assert perfect["cnn_finetuned"] == ["cat"]
    # vit_finetuned: one owl predicted as cat -> cat precision < 1, owl recall < 1; dog perfect
    assert perfect["vit_finetuned"] == ["dog"]
    assert perfect["vit_scratch"] == []


@pytest.mark.slow
def test_a_class_no_model_gets_right(project: Paths) -> None:
    files = files_of(project)
    for model_id in MODEL_IDS:                   # nobody ever gets an owl right
        write_evaluation(project, model_id, with_errors(8, 9, 10, 11), files)
    summary = compare(CFG, SEED, project)
    assert summary["unsolved_classes"] == ["owl"]
    assert any("'owl'" in w for w in summary["warnings"])
    md = (project.metrics / "compare.md").read_text()
    owl_row = row_of(md, "owl")
    assert owl_row.count("0.000") == len(MODEL_IDS)
    assert "No model got a single test image right** of class(es): owl" in md
    assert "> **WARNING:** No model classified a single test image of class &#x27;owl&#x27;" in md


@pytest.mark.slow
def test_a_pretrained_model_trained_from_random_weights_is_flagged(project: Paths) -> None:
    write_evaluation(project, "cnn_transfer", DEFAULT_PREDICTIONS["cnn_transfer"], files_of(project),
                     pretrained=False)
    summary = compare(CFG, SEED, project)
    flagged = [w for w in summary["warnings"] if "RANDOM weights" in w]
    assert len(flagged) == 1 and flagged[0].startswith("cnn_transfer (MobileNetV2 (transfer))")
    md = (project.metrics / "compare.md").read_text()
    assert md.index("> **WARNING:** cnn\\_transfer") < md.index("## Conclusion")   # loud: on top
    row = row_of(md, "MobileNetV2 (transfer)")
    assert "**NO: random init!**" in row
    scratch = row_of(md, "ViT from scratch")
    assert "no (by design)" in scratch           # the scratch ViT is meant to be untrained


@pytest.mark.slow
def test_models_evaluated_on_different_test_images_are_flagged(project: Paths) -> None:
    files = files_of(project)
    other = files[:-1] + ["data/clean/owl/extra.png"]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(project.root / other[-1])
    write_evaluation(project, "vit_transfer", DEFAULT_PREDICTIONS["vit_transfer"], other)
    summary = compare(CFG, SEED, project)
    assert any("vit_transfer was evaluated on different test images" in w for w in summary["warnings"])


def test_missing_metrics_is_a_data_error_naming_the_file(project: Paths) -> None:
    project.metrics_json("vit_transfer").unlink()
    with pytest.raises(DataError, match=r"metrics/vit_transfer\.json"):
        compare(CFG, SEED, project)


def test_missing_predictions_is_a_data_error_naming_the_file(project: Paths) -> None:
    (project.eval_plots("cnn_finetuned") / "predictions.csv").unlink()
    with pytest.raises(DataError, match=r"cnn_finetuned/eval/predictions\.csv"):
        compare(CFG, SEED, project)


@pytest.mark.slow
def test_a_failed_compare_leaves_the_previous_outputs(project: Paths) -> None:
    compare(CFG, SEED, project)
    before = {p: p.read_bytes() for p in (project.metrics_json("compare"),
                                          project.metrics / "compare.md",
                                          project.compare_plots / "predictions_grid.png")}
    for f in files_of(project):                  # the grid can no longer load its images
        (project.root / f).unlink()
    write_evaluation(project, "vit_scratch", Y_TRUE, files_of(project))
    with pytest.raises(DataError, match="not found"):
        compare(CFG, SEED, project)
    assert {p: p.read_bytes() for p in before} == before
    assert not list(project.plots.glob(".compare.tmp-*"))


def test_the_grid_samples_are_fixed_by_the_seed(project: Paths) -> None:
    from vitbench.report.compare import grid_samples, load_results

    results = load_results(project)
    first = grid_samples(results, project, 4, seed=1)
    again = grid_samples(results, project, 4, seed=1)
    other = grid_samples(results, project, 4, seed=2)
    assert [s.image.tobytes() for s in first] == [s.image.tobytes() for s in again]
    assert [(s.actual, s.predictions) for s in first] == [(s.actual, s.predictions) for s in again]
    assert [s.image.tobytes() for s in first] != [s.image.tobytes() for s in other]
    assert len(grid_samples(results, project, 50, seed=1)) == 12     # capped at the test set
    assert [p[0] for p in first[0].predictions] == list(NAMES.values())


def add_robustness(paths: Paths, model_id: str, drop: float) -> None:
    """Give a model corruption results: every corruption and severity `drop` below its accuracy."""
    metrics = json.loads(paths.metrics_json(model_id).read_text())
    rows = [{"corruption": c, "severity": s, "accuracy": metrics["accuracy"] - drop}
            for c in ("gaussian_noise", "gaussian_blur", "jpeg", "brightness", "contrast")
            for s in (1, 2, 3)]
    import pandas as pd

    pd.DataFrame(rows).to_csv(paths.eval_plots(model_id) / "robustness.csv", index=False)
    metrics["corruption_accuracy"] = metrics["accuracy"] - drop
    write_json(paths.metrics_json(model_id), metrics)


@pytest.mark.slow
def test_robustness_says_which_family_degrades_less(project: Paths) -> None:
    for model_id in MODEL_IDS:
        add_robustness(project, model_id, 0.3 if model_id.startswith("cnn") else 0.1)
    summary = compare(CFG, SEED, project)
    assert summary["kinds"]["CNN"]["corruption_drop"] == pytest.approx(0.3)
    assert summary["kinds"]["ViT"]["corruption_drop"] == pytest.approx(0.1)
    md = (project.metrics / "compare.md").read_text()
    assert "the CNNs 30.0, the ViTs 10.0 accuracy points: the **ViTs degrade less**" in md
    assert "## Robustness: accuracy under corruptions" in md
    assert (project.compare_plots / "robustness.png").stat().st_size > 5_000


@pytest.mark.slow
def test_without_robustness_results_the_report_leaves_them_out(project: Paths) -> None:
    compare(CFG, SEED, project)
    md = (project.metrics / "compare.md").read_text()
    assert "Robustness" not in md and "Corrupted acc." not in md
    assert not (project.compare_plots / "robustness.png").exists()


@pytest.mark.slow
def test_class_names_with_a_pipe_or_a_line_break_keep_every_markdown_table_intact(tmp_path: Path) -> None:
    """compare.md from the real compare stage: a `|` in a cell is escaped, a line break is <br>."""
    import re

    classes = ["ca|t", "do\ng", "o\r\nwl"]
    paths = Paths(tmp_path / "proj")
    write_labels(classes, paths.labels)
    files = write_images(paths, classes)
    for model_id, y_pred in DEFAULT_PREDICTIONS.items():
        write_evaluation(paths, model_id, y_pred, files, classes=classes)
    compare(CFG, SEED, paths)
    md = (paths.metrics / "compare.md").read_text()
    tables = re.findall(r"(?:^\|.*\n)+", md, flags=re.MULTILINE)
    assert len(tables) >= 3   # models, paired tests, F1 per class
    for table in tables:   # every row of a table has as many cell borders as its header
        borders = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(borders) == 1, table
    for cell in ("ca\\|t", "do<br>g", "o<br>wl"):   # the per-class F1 table's first column
        assert f"\n| {cell} " in md, cell


@pytest.mark.slow
def test_the_hand_made_evaluate_outputs_have_what_the_real_evaluate_writes(published: Path,
                                                                           tmp_path: Path) -> None:
    """`write_evaluation` stands in for evaluate in the tests above: the same metric keys (the
    real run adds corruption_accuracy, with robustness on, and steps_run where training records
    it) and the same CSV columns as the real
    stage wrote in the published tiny repro (evaluate@vit_scratch)."""
    import pandas as pd

    paths = Paths(tmp_path / "proj")
    write_labels(CLASSES, paths.labels)
    write_evaluation(paths, "vit_scratch", DEFAULT_PREDICTIONS["vit_scratch"], write_images(paths))
    real = Paths(published)
    for file in (Paths.metrics_json, Paths.detail_json):
        made = set(json.loads(file(paths, "vit_scratch").read_text()))
        written = set(json.loads(file(real, "vit_scratch").read_text()))
        assert made <= written and written - made <= {"corruption_accuracy"}, written ^ made
    for name in ("report.csv", "predictions.csv"):
        columns = [list(pd.read_csv(p.eval_plots("vit_scratch") / name, nrows=1).columns)
                   for p in (paths, real)]
        assert columns[0] == columns[1], name


@pytest.mark.slow
def test_a_cnn_at_chance_is_marked_never_best_and_voids_the_verdict(tmp_path: Path) -> None:
    """Both CNNs answer "cat" for everything (8/24, the majority rate): the ViTs' lead over them
    is a training failure, not a win; the CNNs are neither best calibrated nor robust."""
    cat = np.zeros_like(Y_LARGE)
    project = large_project(tmp_path / "proj", {"vit_finetuned": Y_LARGE,
                                                "cnn_transfer": cat, "cnn_finetuned": cat})
    for model_id in MODEL_IDS:             # the CNNs have nothing to lose under corruptions
        add_robustness(project, model_id, 0.0 if model_id.startswith("cnn") else 0.1)
    summary = compare(CFG, SEED, project)
    flat, detail, md = read_outputs(project)
    assert detail["models_at_chance"] == ["cnn_transfer", "cnn_finetuned"]
    assert flat["models_at_chance"] == 2
    assert detail["models"]["cnn_finetuned"]["at_chance"] is True
    assert detail["models"]["cnn_finetuned"]["chance_p"] > 0.05
    versus = summary["cnn_vs_vit"]
    assert versus["winner"] == detail["winner"] == "void"
    assert versus["at_chance"] == ["cnn_transfer"]          # the best CNN (a tie: the first)
    assert flat["cnn_vs_vit_p"] == 2 * 0.5 ** 16              # stored as it is, not deciding
    assert "cnn_finetuned" not in summary["best"]["accuracy"]["models"]
    assert summary["kinds"]["CNN"] == {"ece": None, "corruption_drop": None, "at_chance": 2}
    assert "the best CNN is at chance: a training failure, not evidence for the ViT" in md
    assert "**no verdict**" in md and "is better" not in md
    assert "degrade less" not in md
    assert "every CNN is at chance (it has no accuracy to lose)" in md
    calibration = next(line for line in md.splitlines() if line.startswith("- Calibration"))
    assert "MobileNetV2" not in calibration and "CNNs" not in calibration
    for name in ("MobileNetV2 (transfer)", "MobileNetV2 (fine-tuned)"):
        row = row_of(md, f"{name} (at chance)")             # the models table
        assert "**" not in row.replace("**NO: random init!**", "")   # never the best cell
        assert f"{name} (at chance)" in md.split("## Paired tests")[1]
    assert sum("is at chance" in w for w in summary["warnings"]) == 2
    assert "- **At chance:** MobileNetV2 (transfer) (33.3% against 33.3%" in md


@pytest.mark.slow
def test_when_every_model_is_at_chance_nothing_is_best(tmp_path: Path) -> None:
    cat = np.zeros_like(Y_LARGE)
    project = large_project(tmp_path / "proj", dict.fromkeys(MODEL_IDS, cat))
    summary = compare(CFG, SEED, project)
    flat, detail, md = read_outputs(project)
    assert summary["best"]["accuracy"] == {"value": None, "models": []}
    assert flat["models_at_chance"] == 5 and "best_accuracy" not in flat
    assert detail["winner"] == "void"
    assert "- Best accuracy: none, every model is at chance." in md
    assert "both are at chance: training failures, not evidence for either kind" in md
    assert "- Calibration and robustness: not compared, every model is at chance." in md


@pytest.mark.slow
def test_class_names_that_are_markup_show_as_text(tmp_path: Path) -> None:
    """compare.md from the real compare stage: a class called like an HTML tag or markdown
    emphasis is escaped in the warnings, the conclusion and the per-class table."""
    classes = ["<img src=x onerror=alert(1)>", "**bold**", "owl"]
    paths = Paths(tmp_path / "proj")
    write_labels(classes, paths.labels)
    files = write_images(paths, classes)
    for model_id in MODEL_IDS:               # nobody gets the first class right: a warning
        write_evaluation(paths, model_id, with_errors(0, 1, 2, 3), files, classes=classes)
    summary = compare(CFG, SEED, paths)
    md = (paths.metrics / "compare.md").read_text()
    assert summary["unsolved_classes"] == [classes[0]]
    assert "<img" not in md
    assert md.count("**bold**") == md.count("per column in **bold**") == 1   # the report's own
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    warning = next(line for line in md.splitlines() if "No model classified" in line)
    assert escaped in warning
    assert f"of class(es): {escaped}. Check" in md                    # the conclusion
    assert f"\n| {escaped} " in md and "\n| \\*\\*bold\\*\\* " in md   # the per-class table


def test_missing_detail_is_a_data_error_naming_the_file(project: Paths) -> None:
    project.detail_json("vit_scratch").unlink()
    with pytest.raises(DataError, match=r"metrics/vit_scratch_detail\.json not found"):
        compare(CFG, SEED, project)


@pytest.mark.slow
def test_the_verdict_states_every_difference_in_inputs_and_budget(project: Paths) -> None:
    """Best CNN (MobileNetV2 fine-tuned, 96 px) against best ViT (ViT-B/32 fine-tuned, 224 px)."""
    compare(CFG, SEED, project)
    md = (project.metrics / "compare.md").read_text()
    conclusion = md.split("## Conclusion")[1].split("\n## ")[0]
    assert ("- **Not like for like:** the CNN saw 96 px inputs, the ViT 224 px (both: pretrained "
            "weights, 12 optimizer steps (3 epochs) in the last training phase). Training took the "
            "CNN 12.0 s and the ViT 12.0 s; the CNN has 2.3 M parameters, the ViT 87.5 M."
            in conclusion), conclusion
    assert "|   96 px |" in row_of(md, "MobileNetV2 (fine-tuned)")       # the Input column


def test_the_footing_sentence_names_each_difference_once() -> None:
    from vitbench.report.markdown import footing_sentence

    cnn = {"image_size": 96, "pretrained": True, "steps_run": 120, "epochs_run": 5,
           "train_seconds": 30.0, "params_total": 2_257_984}
    vit = {"image_size": 48, "pretrained": False, "steps_run": 300, "epochs_run": 10,
           "train_seconds": 95.0, "params_total": 192_010}
    assert footing_sentence(cnn, vit) == (
        "**Not like for like:** the CNN saw 96 px inputs, the ViT 48 px; the CNN started from "
        "pretrained weights, the ViT from random weights; the CNN's last training phase ran 120 "
        "optimizer steps (5 epochs), the ViT's 300 optimizer steps (10 epochs). Training took the "
        "CNN 30.0 s and the ViT 1 min 35 s; the CNN has 2.26 M parameters, the ViT 192 k.")
    same = footing_sentence(cnn, {**cnn, "steps_run": None})
    assert same.startswith("**Not like for like:** the CNN's last training phase ran 120 optimizer "
                           "steps (5 epochs), the ViT's 5 epochs (both: 96 px inputs, pretrained weights)")
    assert footing_sentence(cnn, cnn).startswith(
        "**Like for like** in inputs, weights and training length (both: 96 px inputs, pretrained "
        "weights, 120 optimizer steps (5 epochs) in the last training phase).")
