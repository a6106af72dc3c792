"""The whole DAG end to end on a tiny configuration, in a project copy, as a user drives it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dvc_project import changed_stages, run, set_params, stages_run
from vitbench.models.registry import model_ids

MODEL_IDS = model_ids()

pytestmark = pytest.mark.slow

MAX_METRIC_KEYS = 30     # distinct keys over every file under dvc.yaml `metrics:` (the contract)
# the headline keys ../shared/design/contract.md fixes: every model's and compare.json's
HEADLINE_MODEL = {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1_macro", "ece",
                  "corruption_accuracy", "chance_p", "pretrained", "train_seconds", "steps_run"}
HEADLINE_COMPARE = {"test_images", "vit_minus_cnn", "cnn_vs_vit_p", "models_at_chance"}
MAX_LINE = 200           # characters: a wide terminal

METRIC_KEYS = {"accuracy", "loss", "top5_accuracy", "precision_macro", "recall_macro", "f1_macro",
               "f1_weighted", "params_total", "params_trainable", "size_mb", "train_seconds",
               "epochs_run", "infer_images_per_second", "pretrained"}


@pytest.fixture(scope="module")
def reproduced(full_dag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the suite's full `dvc repro` (conftest.full_dag) shared by the tests of this module."""
    from conftest import copy_built

    return copy_built(full_dag, tmp_path_factory.mktemp("dag") / "project")


def test_outputs_of_the_whole_dag(reproduced: Path) -> None:
    for model_id in MODEL_IDS:
        metrics = {**json.loads((reproduced / "metrics" / f"{model_id}.json").read_text()),
                   **json.loads((reproduced / "metrics" / f"{model_id}_detail.json").read_text())}
        assert METRIC_KEYS <= set(metrics), model_id
        assert 0.0 <= metrics["accuracy"] <= 1.0
        assert metrics["pretrained"] is False  # the tiny config forbids downloads
        assert (reproduced / "models" / model_id / "record.json").is_file()
        assert (reproduced / "plots" / model_id / "eval" / "plots" / "sklearn" /
                "confusion_matrix.json").is_file()
        assert (reproduced / "plots" / model_id / "eval" / "reliability.png").is_file()
        assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"]
    report = (reproduced / "metrics" / "compare.md").read_text()
    assert "| " in report and "accuracy" in report.lower()
    detail = json.loads((reproduced / "metrics" / "compare_detail.json").read_text())
    assert set(detail["models"]) == set(MODEL_IDS)
    cnn, vit = (json.loads((reproduced / "metrics" / f"{detail['cnn_vs_vit'][k]}_detail.json").read_text())
                for k in ("best_cnn", "best_vit"))       # TINY: 32 px CNNs, 24 px or 32 px ViTs
    footing = next(line for line in report.splitlines() if "like for like" in line.lower())
    assert (f"the CNN saw {cnn['image_size']} px inputs, the ViT {vit['image_size']} px" in footing
            if cnn["image_size"] != vit["image_size"] else f"{cnn['image_size']} px inputs" in footing)
    compare = json.loads((reproduced / "metrics" / "compare.json").read_text())
    assert all(not isinstance(v, (dict, list)) for v in compare.values())     # flat DVC metrics
    shown = run(reproduced, "dvc", "metrics", "show", "metrics/compare.json").stdout
    assert max(len(line) for line in shown.splitlines()) < 200, shown
    for name in ("accuracy_loss", "size_vs_accuracy", "per_class_f1", "predictions_grid",
                 "robustness"):
        assert (reproduced / "plots" / "compare" / f"{name}.png").stat().st_size > 5_000


def test_dvc_metrics_hold_few_keys_and_numbers_only(reproduced: Path) -> None:
    """Every file under dvc.yaml `metrics:` holds numbers and booleans only, at most
    MAX_METRIC_KEYS distinct keys in all (the contract); each view of them fits MAX_LINE."""
    shown = json.loads(run(reproduced, "dvc", "metrics", "show", "--json").stdout)
    files = {path: entry["data"] for path, entry in next(iter(shown.values()))["data"].items()}
    assert set(files) == {f"metrics/{m}.json" for m in MODEL_IDS} | {"metrics/compare.json"}
    for path, data in files.items():
        assert all(isinstance(v, (int, float)) for v in data.values()), (path, data)
        assert set(data) == (HEADLINE_COMPARE if path.endswith("compare.json") else HEADLINE_MODEL), path
    keys = set().union(*files.values())
    assert len(keys) <= MAX_METRIC_KEYS, sorted(keys)
    # the plain table: a Path column and one per headline key, nothing else
    header = run(reproduced, "dvc", "metrics", "show").stdout.splitlines()[0].split()
    assert header[0] == "Path" and set(header[1:]) == HEADLINE_MODEL | HEADLINE_COMPARE, header
    for targets in ([f"metrics/{m}.json" for m in MODEL_IDS], ["metrics/compare.json", "metrics/split.json"]):
        table = run(reproduced, "dvc", "metrics", "show", *targets).stdout
        assert max(len(line) for line in table.splitlines()) < MAX_LINE, table


def test_second_repro_does_nothing(reproduced: Path) -> None:
    out = run(reproduced, "dvc", "repro")
    assert stages_run(out.stdout) == ["fetch"]  # always runs; its source is unchanged: no rewrite


def test_plots_show_renders_everything_without_warnings(reproduced: Path) -> None:
    out = run(reproduced, "dvc", "plots", "show", "-o", "plots_html")
    html = (reproduced / "plots_html" / "index.html").read_text()
    assert "WARNING" not in out.stderr.upper() and "WARNING" not in out.stdout.upper(), out.stderr
    for needle in ("confusion matrix on the test split", "predictions_grid.png", "augment_preview.png",
                   "val/accuracy.tsv", "vit_patches.png", "gradcam.png", "reliability.png",
                   "robustness.png"):
        assert needle in html, needle


def test_status_lists_only_the_stage_whose_params_changed(reproduced: Path) -> None:
    original = (reproduced / "params.yaml").read_text()
    try:
        set_params(reproduced, {"cnn": {"finetune": {"lr": 3.0e-5}}})
        assert changed_stages(reproduced) == {"train_cnn"}
        (reproduced / "params.yaml").write_text(original)
        set_params(reproduced, {"vit": {"patch_size": 8}})
        assert changed_stages(reproduced) == {"train_vit"}
        (reproduced / "params.yaml").write_text(original)
        set_params(reproduced, {"evaluate": {"attention_samples": 1}})
        assert changed_stages(reproduced) == {f"evaluate@{m}" for m in MODEL_IDS}
    finally:
        (reproduced / "params.yaml").write_text(original)
    assert changed_stages(reproduced) == set()


@pytest.fixture(scope="module")
def keras_file_outputs(reproduced: Path) -> dict[str, np.ndarray]:
    """Every model.keras' predictions on the test split, the five files loaded by plain Keras
    after `import vitbench` in one fresh process."""
    from test_model_files import keras_file_inputs
    from test_models_io import keras_files_predictions

    inputs = {model_id: keras_file_inputs(reproduced, model_id) for model_id in MODEL_IDS}
    outputs = keras_files_predictions(dict(inputs.values()))
    return {model_id: outputs[path] for model_id, (path, _) in inputs.items()}


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_every_model_folder_holds_a_loadable_keras_file_and_its_card(
        reproduced: Path, keras_file_outputs: dict[str, np.ndarray], model_id: str) -> None:
    """Every family's model.keras, loaded by plain Keras after `import vitbench`, predicts as
    evaluate did; every card states its metrics file (and TINY trains the models meant to be
    pretrained from random weights: their cards say so loudly)."""
    from test_model_files import check_card, check_predictions

    check_predictions(reproduced, model_id, keras_file_outputs[model_id])
    card = check_card(reproduced, model_id)
    assert ("WARNING: trained from random weights" in card) == (model_id != "vit_scratch")


def test_predict_warns_about_a_model_trained_from_random_weights(reproduced: Path) -> None:
    image = next((reproduced / "data" / "clean").rglob("*.png"))
    out = run(reproduced, "vitbench", "predict", str(image), "--model", "cnn_transfer")
    assert "models/cnn_transfer was trained from RANDOM weights" in out.stderr, out.stderr
