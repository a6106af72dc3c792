"""The evaluate stage: metrics against scikit-learn, attention rollout, and evaluate() end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as scipy_stats
from sklearn import metrics as skm

from vitbench.models.registry import section_with
from vitbench.data.manifest import write_labels, write_manifest
from vitbench.core.errors import DataError
from vitbench.evaluate.evaluation import class_report, compute_metrics, evaluate, predictions_table
from vitbench.core.paths import Paths
from vitbench.evaluate.saliency import attention_rollout

# the contract: metrics/<id>.json (a DVC metric) holds the headline numbers only ...
HEADLINE_KEYS = {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1_macro", "ece",
                 "corruption_accuracy", "chance_p", "pretrained", "train_seconds", "steps_run"}
# ... and metrics/<id>_detail.json beside it the names, input and every other figure
DETAIL_KEYS = {"model", "display_name", "family", "phase", "kind", "meant_pretrained", "image_size",
               "preprocess", "loss", "top5_accuracy", "precision_macro", "recall_macro",
               "f1_weighted", "f1_macro_ci_low", "f1_macro_ci_high", "params_total",
               "params_trainable", "size_mb", "epochs_run", "infer_images_per_second"}


# --- compute_metrics against scikit-learn -------------------------------------------------------

def random_predictions(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 2
    logits[np.arange(n), y] += rng.normal(1.0, 1.0, n)      # better than chance, not perfect
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba.astype(np.float32)


def sklearn_metrics(y: np.ndarray, proba: np.ndarray, k: int) -> dict:
    labels = list(range(k))
    pred = proba.argmax(axis=1)
    prf = {avg: skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg,
                                                    zero_division=0)
           for avg in ("macro", "weighted")}
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "loss": skm.log_loss(y, proba, labels=labels),
        "top5_accuracy": skm.top_k_accuracy_score(y, proba, k=5, labels=labels) if k > 5 else None,
        "precision_macro": prf["macro"][0],
        "recall_macro": prf["macro"][1],
        "f1_macro": prf["macro"][2],
        "f1_weighted": prf["weighted"][2],
    }


def assert_same(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        if value is None:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("n,k,seed", [(200, 10, 0), (57, 3, 1), (31, 2, 2), (120, 6, 3), (500, 25, 4)])
def test_compute_metrics_agrees_with_sklearn(n: int, k: int, seed: int) -> None:
    y, proba = random_predictions(n, k, seed)
    assert_same(compute_metrics(y, proba, k), sklearn_metrics(y, proba, k))


def test_class_never_predicted_and_class_absent() -> None:
    # class 2 is never predicted; class 3 never occurs and is never predicted
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 5, 4, 5])
    pred = np.array([0, 1, 1, 1, 0, 1, 0, 0, 4, 5, 4, 4])
    proba = np.full((len(y), 6), 0.02, dtype=np.float64)
    proba[np.arange(len(y)), pred] = 0.9
    ours = compute_metrics(y, proba, 6)
    assert_same(ours, sklearn_metrics(y, proba, 6))
    report = class_report(y, pred, list("abcdef")).set_index("class")
    assert report.loc["c", "precision"] == 0 and report.loc["c", "recall"] == 0
    assert report.loc["d", "support"] == 0 and report.loc["d", "f1"] == 0


def test_zero_probability_for_the_true_class_is_clipped_like_sklearn() -> None:
    y = np.array([0, 1, 1])
    proba = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    ours = compute_metrics(y, proba, 2)
    assert np.isfinite(ours["loss"])
    assert ours["loss"] == pytest.approx(skm.log_loss(y, proba, labels=[0, 1]), rel=1e-6)


def test_top5_is_none_for_five_classes_or_fewer() -> None:
    y, proba = random_predictions(40, 5, 7)
    assert compute_metrics(y, proba, 5)["top5_accuracy"] is None
    y, proba = random_predictions(40, 6, 7)
    assert compute_metrics(y, proba, 6)["top5_accuracy"] is not None


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 2, 0])
    m = compute_metrics(y, np.eye(3)[y], 3)
    assert m["accuracy"] == m["f1_macro"] == m["precision_macro"] == m["recall_macro"] == 1.0
    assert m["loss"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("y,proba,match", [
    (np.array([0, 1]), np.ones((2, 3)) / 3, r"expected \[n, 2\]"),
    (np.array([0, 1, 1]), np.ones((2, 2)) / 2, "labels for 2 predictions"),
    (np.array([0, 2]), np.ones((2, 2)) / 2, "0..1"),
    (np.array([], dtype=int), np.ones((0, 2)), "at least one"),
])
def test_bad_inputs_are_named(y: np.ndarray, proba: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_metrics(y, proba, 2)


def test_predictions_table_top3_and_confidence() -> None:
    proba = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    table = predictions_table(["a.png", "b.png"], np.array([1, 2]), proba, ["cat", "dog", "owl"])
    assert list(table.columns) == ["path", "actual", "predicted", "confidence", "top3"]
    assert list(table["predicted"]) == ["dog", "cat"]
    assert list(table["actual"]) == ["dog", "owl"]
    assert table["confidence"].tolist() == [0.7, 0.5]
    assert table["top3"][0] == "dog:0.7000|owl:0.2000|cat:0.1000"


# --- attention rollout --------------------------------------------------------------------------

def test_rollout_of_identity_attention_is_uniform() -> None:
    eye = np.broadcast_to(np.eye(17), (2, 3, 17, 17))       # class token + 4x4 patches
    maps = attention_rollout([eye, eye], class_token=True)
    assert maps.shape == (2, 4, 4)
    assert np.allclose(maps, 0.0)                            # constant map -> all zero after scaling


def test_rollout_follows_attention_to_one_patch() -> None:
    tokens = 9
    att = np.zeros((1, 2, tokens, tokens))
    att[..., 4] = 1.0                                        # every query attends to the centre patch
    maps = attention_rollout([att, att, att], class_token=False)
    assert maps.shape == (1, 3, 3)
    assert maps[0, 1, 1] == 1.0 and maps.max() == 1.0
    assert np.unravel_index(maps[0].argmax(), (3, 3)) == (1, 1)


def test_rollout_matches_a_hand_computation() -> None:
    rng = np.random.default_rng(0)
    layers = [rng.random((1, 2, 5, 5)) for _ in range(2)]
    layers = [a / a.sum(-1, keepdims=True) for a in layers]
    expected = None
    for a in layers:
        m = a.mean(axis=1)[0] + np.eye(5)
        m = m / m.sum(-1, keepdims=True)
        expected = m if expected is None else m @ expected
    cls = expected[0, 1:]
    cls = (cls - cls.min()) / (cls.max() - cls.min())
    assert np.allclose(attention_rollout(layers, class_token=True)[0].ravel(), cls)


def test_rollout_rejects_non_square_token_count() -> None:
    with pytest.raises(ValueError, match="square grid"):
        attention_rollout([np.ones((1, 1, 6, 6)) / 6], class_token=False)


# --- evaluate() end to end on tiny saved models ---------------------------------------------------

CLASSES = ["circle", "square", "stripes"]


def draw(kind: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    img = np.full((size, size, 3), 235, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    if kind == "circle":
        img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] = (200, 30, 30)
    elif kind == "square":
        img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (30, 30, 200)
    else:
        img[(xx // 5) % 2 == 0] = (30, 160, 30)
    return img


@pytest.fixture
def tiny_project(tmp_path: Path) -> Paths:
    """A project (outside git) with a test split of 4 drawn images per class and labels.json."""
    paths = Paths(tmp_path / "proj")
    rng = np.random.default_rng(0)
    rows = []
    for c in CLASSES:
        for i in range(4):
            f = paths.clean / c / f"{c}{i}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw(c, rng)).save(f)
            rows.append({"path": str(f), "class": c, "split": "test"})
    write_manifest(pd.DataFrame(rows), paths.split_csv("test"))
    write_labels(CLASSES, paths.labels)
    return paths


def save_tiny(paths: Paths, model_id: str, family: str, build: dict, preprocess: str,
              pretrained: bool = False, **record_keys: object) -> None:
    from vitbench.models.store import build_model, save_model

    record = {"id": model_id, "family": family, "build": build, "classes": CLASSES,
              "image_size": build["image_size"], "preprocess": preprocess,
              "pretrained": pretrained, "train_seconds": 1.5, "epochs_run": 1, "recipe": RECIPE,
              **record_keys}
    save_model(build_model(record), paths.model(model_id), record)


VIT_SCRATCH = {"image_size": 16, "patch_size": 4, "projection_dim": 8, "num_heads": 2, "layers": 2,
               "mlp_head": [8], "dropout": 0.0, "num_classes": 3, "spt": True, "lsa": True}
EVAL = section_with("evaluate", batch_size=5, attention_samples=3)
RECIPE = {"optimizer": "Adam", "lr": 0.001, "label_smoothing": 0.1}   # handed on to compare.md
SEED = 3


def check_outputs(paths: Paths, model_id: str, metrics: dict) -> None:
    headline = json.loads(paths.metrics_json(model_id).read_text())
    detail = json.loads(paths.detail_json(model_id).read_text())
    assert {**headline, **detail} == metrics and not set(headline) & set(detail)
    assert set(headline) <= HEADLINE_KEYS and HEADLINE_KEYS - set(headline) <= {"steps_run",
                                                                                "corruption_accuracy"}
    assert all(isinstance(v, (int, float)) for v in headline.values()), headline   # numbers only
    assert set(detail) == DETAIL_KEYS
    on_disk = metrics
    assert on_disk["top5_accuracy"] is None                  # 3 classes
    assert 0 <= on_disk["accuracy"] <= 1 and on_disk["infer_images_per_second"] > 0
    assert on_disk["size_mb"] > 0 and on_disk["train_seconds"] == 1.5
    eval_dir = paths.eval_plots(model_id)
    cm = json.loads((eval_dir / "plots" / "sklearn" / "confusion_matrix.json").read_text())
    assert len(cm) == 12 and {row["actual"] for row in cm} == set(CLASSES)
    report = pd.read_csv(eval_dir / "report.csv")
    assert list(report.columns) == ["class", "precision", "recall", "f1", "support"]
    assert report["support"].tolist() == [4, 4, 4]
    preds = pd.read_csv(eval_dir / "predictions.csv")
    assert len(preds) == 12 and preds["path"].str.startswith("data/clean/").all()
    assert (preds["actual"] == preds["predicted"]).mean() == pytest.approx(metrics["accuracy"])
    correct = int((preds["actual"] == preds["predicted"]).sum())     # majority rate: 4 of 12
    assert on_disk["chance_p"] == pytest.approx(
        scipy_stats.binomtest(correct, 12, 1 / 3, alternative="greater").pvalue, rel=1e-12)
    assert (eval_dir / "confusion_matrix.png").stat().st_size > 0
    assert (eval_dir / "reliability.png").stat().st_size > 0
    assert json.loads((eval_dir / "recipe.json").read_text()) == RECIPE
    assert on_disk["accuracy_ci_low"] <= on_disk["accuracy"] <= on_disk["accuracy_ci_high"]
    assert on_disk["f1_macro_ci_low"] <= on_disk["f1_macro"] <= on_disk["f1_macro_ci_high"]
    assert 0 <= on_disk["ece"] <= 1
    robustness = pd.read_csv(eval_dir / "robustness.csv")
    assert len(robustness) == 15 and robustness["accuracy"].between(0, 1).all()
    assert on_disk["corruption_accuracy"] == pytest.approx(robustness["accuracy"].mean(), abs=1e-6)
    assert not list(eval_dir.parent.glob(".eval.tmp-*"))     # the atomic temp dir is gone


@pytest.mark.slow
def test_evaluate_cnn_end_to_end(tiny_project: Paths) -> None:
    save_tiny(tiny_project, "cnn_transfer", "cnn",
              {"arch": "mobilenetv2", "image_size": 32, "num_classes": 3, "dropout": 0.0},
              "tf")
    metrics = evaluate("cnn_transfer", EVAL, SEED, tiny_project)
    check_outputs(tiny_project, "cnn_transfer", metrics)
    assert "steps_run" not in metrics                # a record without it: left out
    assert metrics["display_name"] == "MobileNetV2 (transfer)"
    assert (metrics["image_size"], metrics["preprocess"]) == (32, "tf")   # the record's
    assert metrics["pretrained"] is False
    assert not (tiny_project.eval_plots("cnn_transfer") / "attention.png").exists()
    with Image.open(tiny_project.eval_plots("cnn_transfer") / "gradcam.png") as img:
        assert img.width > 300 and img.height > 200


@pytest.mark.slow
def test_evaluate_vit_scratch_writes_attention(tiny_project: Paths) -> None:
    save_tiny(tiny_project, "vit_scratch", "vit", VIT_SCRATCH, "tf", steps_run=7)
    metrics = evaluate("vit_scratch", EVAL, SEED, tiny_project)
    check_outputs(tiny_project, "vit_scratch", metrics)
    assert metrics["steps_run"] == 7                 # copied from the training record
    with Image.open(tiny_project.eval_plots("vit_scratch") / "attention.png") as img:
        assert img.width > 300 and img.height > 200


@pytest.mark.slow
def test_evaluate_vit_ft_writes_class_token_rollout(tiny_project: Paths) -> None:
    tiny = {"variant": "b16", "image_size": 32, "num_classes": 3, "representation_size": None,
            "config": {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "mlp_dim": 16, "dropout": 0.0}}
    save_tiny(tiny_project, "vit_finetuned", "vit_ft", tiny, "tf", pretrained=True)
    metrics = evaluate("vit_finetuned", EVAL, SEED, tiny_project)
    check_outputs(tiny_project, "vit_finetuned", metrics)
    assert metrics["pretrained"] is True
    assert (tiny_project.eval_plots("vit_finetuned") / "attention.png").is_file()


def test_missing_model_is_a_data_error(tiny_project: Paths) -> None:
    with pytest.raises(DataError, match="vit_transfer"):
        evaluate("vit_transfer", EVAL, SEED, tiny_project)


@pytest.mark.slow
def test_model_trained_on_other_classes_is_refused(tiny_project: Paths) -> None:
    save_tiny(tiny_project, "vit_scratch", "vit", VIT_SCRATCH, "tf")
    write_labels(["circle", "square", "triangle"], tiny_project.labels)
    with pytest.raises(DataError, match="differ"):
        evaluate("vit_scratch", EVAL, SEED, tiny_project)
    assert not tiny_project.metrics_json("vit_scratch").exists()
