"""models/<id>/model.keras and models/<id>/README.md as the pipeline writes them.

On the `published` tiny repro (vit_scratch); tests/test_dag_full.py runs the same checks on every
model of a full repro (`keras_file_inputs`, `check_predictions`, `check_card`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dvc_project import run
from test_models_io import keras_file_predictions
from vitbench.data.manifest import read_labels, read_manifest
from vitbench.data.pipeline import labelled_paths, load_images, preprocess_fn
from vitbench.evaluate.card import model_card, split_counts
from vitbench.core.markup import escape_text
from vitbench.core.paths import Paths
from vitbench.evaluate.outputs import read_model_metrics


def keras_file_inputs(project: Path, model_id: str) -> tuple[Path, np.ndarray]:
    """models/<id>/model.keras and the test split as its record says to feed it."""
    paths = Paths(project)
    record = json.loads((paths.model(model_id) / "record.json").read_text())
    test_paths, _ = labelled_paths(paths.split_csv("test"), read_labels(paths.labels))
    images = load_images(test_paths, record["image_size"]).astype(np.float32)
    return paths.model(model_id) / "model.keras", np.asarray(preprocess_fn(record["preprocess"])(images))


def check_predictions(project: Path, model_id: str, proba: np.ndarray) -> None:
    """`proba`, model.keras' output on `keras_file_inputs`, is what the evaluate stage wrote
    (plots/<id>/eval/predictions.csv: predicted class and confidence)."""
    paths = Paths(project)
    classes = read_labels(paths.labels)
    table = pd.read_csv(paths.eval_plots(model_id) / "predictions.csv", keep_default_na=False)
    assert len(table) == len(proba) > 0, model_id
    assert [classes[i] for i in proba.argmax(axis=1)] == list(table["predicted"]), model_id
    np.testing.assert_allclose(proba.max(axis=1), table["confidence"], atol=2e-5, err_msg=model_id)


def check_keras_file(project: Path, model_id: str) -> None:
    """model.keras, loaded by plain Keras in a fresh process, predicts the test split as the
    evaluate stage did."""
    check_predictions(project, model_id, keras_file_predictions(*keras_file_inputs(project, model_id)))


def check_card(project: Path, model_id: str) -> str:
    """README.md states metrics/<id>.json's and metrics/<id>_detail.json's numbers, the record's pretrained flag, the classes and
    the split's image counts; returns the card."""
    paths = Paths(project)
    card = (paths.model(model_id) / "README.md").read_text()
    metrics = {**json.loads(paths.metrics_json(model_id).read_text()),
               **json.loads(paths.detail_json(model_id).read_text())}
    record = json.loads((paths.model(model_id) / "record.json").read_text())
    assert f"| accuracy | {metrics['accuracy']:.4f} | [{metrics['accuracy_ci_low']:.4f}, " \
           f"{metrics['accuracy_ci_high']:.4f}] (Wilson) |" in card
    assert f"| macro F1 | {metrics['f1_macro']:.4f} | [{metrics['f1_macro_ci_low']:.4f}, " \
           f"{metrics['f1_macro_ci_high']:.4f}] (bootstrap) |" in card
    assert f"| expected calibration error | {metrics['ece']:.4f} |" in card
    assert f"| {metrics['chance_p']:.4g} |" in card
    counts = {s: len(read_manifest(paths.split_csv(s))) for s in ("train", "val", "test")}
    assert f"Images: {counts['train']} train, {counts['val']} validation, {counts['test']} test" in card
    assert all(escape_text(name) in card for name in read_labels(paths.labels))   # as text
    loaded = "yes (ImageNet)" if record["pretrained"] else "no (random initial weights)"
    assert f"Pretrained weights loaded: {loaded}" in card
    assert f'keras.saving.load_model("models/{model_id}/model.keras")' in card
    return card


def test_the_keras_file_predicts_as_the_evaluate_stage(published: Path) -> None:
    check_keras_file(published, "vit_scratch")


def test_the_model_card_states_the_metrics_file(published: Path) -> None:
    card = check_card(published, "vit_scratch")
    assert "WARNING" not in card  # meant to start from random weights: nothing to warn about


def test_the_pipeline_stays_clean_with_the_card_as_evaluate_output(published: Path) -> None:
    """DVC accepts model files (train) and the card (evaluate) in one folder, and after the repro
    nothing is stale; the card is committed to git, the model files are DVC's."""
    status = run(published, "dvc", "status", "evaluate@vit_scratch").stdout
    assert "up to date" in status, status
    tracked = run(published, "git", "ls-files", "models").stdout.split()
    assert tracked == ["models/vit_scratch/README.md"], tracked


def test_the_card_warns_when_a_model_meant_pretrained_has_random_weights(published: Path) -> None:
    """The record finetune_vit writes for vit_transfer when `pretrained: auto` found no weights."""
    paths = Paths(published)
    record = json.loads((paths.model("vit_scratch") / "record.json").read_text())
    metrics = read_model_metrics(paths, "vit_scratch")
    record = {**record, "id": "vit_transfer", "family": "vit_ft"}
    card = model_card("vit_transfer", {**record, "pretrained": False}, metrics,
                      "synthetic", read_labels(paths.labels), split_counts(paths))
    assert "> **WARNING: trained from random weights.** `vit_transfer` is meant to start" in card
    assert "WARNING" not in model_card("vit_transfer", {**record, "pretrained": True}, metrics,
                                       "synthetic", read_labels(paths.labels), split_counts(paths))


@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>", "**bold** | pipe"])
def test_user_strings_in_the_card_are_escaped(published: Path, name: str) -> None:
    paths = Paths(published)
    record = json.loads((paths.model("vit_scratch") / "record.json").read_text())
    metrics = read_model_metrics(paths, "vit_scratch")
    card = model_card("vit_scratch", record, metrics, name, [name, "b"], split_counts(paths))
    assert name not in card
    assert "&lt;img" in card or "\\*\\*bold\\*\\* \\| pipe" in card
