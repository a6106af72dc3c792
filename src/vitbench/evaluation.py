"""The evaluate stage: one trained model on the test split -> metrics/<id>.json and plots/<id>/eval/.

The metrics are computed here from the predicted probabilities (and tested against scikit-learn);
the figures come from `vitbench.plots.evaluation`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from vitbench.config import Params
from vitbench.data.manifest import read_labels
from vitbench.errors import DataError
from vitbench.fsutil import atomic_dir, write_json
from vitbench.paths import Paths

log = logging.getLogger(__name__)

TOP_K = 5
VIT_FAMILIES = ("vit_scratch", "vit_ft")
ATTENTION_METHODS = {   # how each family's map is made and read (printed on attention.png)
    "vit_scratch": "attention rollout (Abnar & Zuidema 2020) averaged over all patch tokens; "
                   "red = most attention",
    "vit_ft": "vit-keras attention_map (rollout from the class token): "
              "the image is dimmed where the model does not attend",
}
ATTENTION_DISPLAY_SIZE = 160      # pixels: attention figures show the images at least this big
THROUGHPUT_MIN_SECONDS = 1.0      # time repeated batches for at least this long ...
THROUGHPUT_MIN_RUNS = 3           # ... and at least this many times (after one warm-up run)
THROUGHPUT_MAX_RUNS = 50


# --- metrics (pure) -----------------------------------------------------------------------------

def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix `cm[actual, predicted]` of integer label ids."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * tp, predicted + support)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy, cross-entropy, top-5 accuracy (None for <= 5 classes) and macro/weighted scores.

    `y_true` holds integer label ids, `proba` the predicted class probabilities `[n, num_classes]`.
    Every value equals scikit-learn's on the same inputs (macro averages over all `num_classes`).
    """
    y_true, proba = _check_predictions(y_true, proba, num_classes)
    y_pred = proba.argmax(axis=1)
    scores = per_class_scores(confusion_counts(y_true, y_pred, num_classes))
    support = scores["support"]
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "loss": cross_entropy(y_true, proba),
        "top5_accuracy": top_k_accuracy(y_true, proba, TOP_K) if num_classes > TOP_K else None,
        "precision_macro": float(scores["precision"].mean()),
        "recall_macro": float(scores["recall"].mean()),
        "f1_macro": float(scores["f1"].mean()),
        "f1_weighted": float((scores["f1"] * support).sum() / support.sum()),
    }


def cross_entropy(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log probability of the true class (clipped to [eps, 1-eps] of proba's dtype)."""
    dtype = proba.dtype if np.issubdtype(proba.dtype, np.floating) else np.float64
    eps = np.finfo(dtype).eps
    p_true = np.clip(proba[np.arange(len(y_true)), y_true].astype(np.float64), eps, 1 - eps)
    return float(-np.log(p_true).mean())


def top_k_accuracy(y_true: np.ndarray, proba: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the k highest probabilities."""
    top = np.argsort(proba, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float(np.mean((top == y_true[:, None]).any(axis=1)))


def class_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per class: class, precision, recall, f1, support."""
    scores = per_class_scores(confusion_counts(y_true, y_pred, len(classes)))
    return pd.DataFrame({"class": classes, **{k: scores[k] for k in
                                              ("precision", "recall", "f1", "support")}})


def predictions_table(paths: list[str], y_true: np.ndarray, proba: np.ndarray,
                      classes: list[str]) -> pd.DataFrame:
    """path, actual, predicted, confidence and top3 (`class:probability|...`) per test image."""
    order = np.argsort(proba, axis=1, kind="mergesort")[:, ::-1][:, :3]
    y_pred = order[:, 0]
    top3 = ["|".join(f"{classes[j]}:{row[j]:.4f}" for j in idx) for row, idx in zip(proba, order)]
    return pd.DataFrame({
        "path": paths,
        "actual": [classes[i] for i in y_true],
        "predicted": [classes[i] for i in y_pred],
        "confidence": np.round(proba[np.arange(len(y_pred)), y_pred].astype(np.float64), 6),
        "top3": top3,
    })


def attention_rollout(weights: list[np.ndarray], class_token: bool) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) as a `[batch, grid, grid]` map scaled to 0..1.

    `weights` holds one `[batch, heads, tokens, tokens]` array per layer, first layer first. Heads
    are averaged, the identity added for the residual path, rows renormalised, and the layers
    multiplied through. The map is the class token's row (`class_token`), otherwise the mean over
    all query tokens.
    """
    if not weights:
        raise ValueError("attention_rollout needs the weights of at least one layer")
    rollout = None
    for layer in weights:
        att = np.asarray(layer, dtype=np.float64).mean(axis=1)
        att = att + np.eye(att.shape[-1])
        att = att / att.sum(axis=-1, keepdims=True)
        rollout = att if rollout is None else att @ rollout
    assert rollout is not None
    scores = rollout[:, 0, 1:] if class_token else rollout.mean(axis=1)
    grid = int(round(np.sqrt(scores.shape[1])))
    if grid * grid != scores.shape[1]:
        raise ValueError(f"{scores.shape[1]} patch tokens do not form a square grid "
                         f"(class_token={class_token})")
    lo, hi = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    scaled = _safe_divide(scores - lo, np.broadcast_to(hi - lo, scores.shape))
    return scaled.reshape(-1, grid, grid)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _check_predictions(y_true: np.ndarray, proba: np.ndarray,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    if proba.ndim != 2 or proba.shape[1] != num_classes:
        raise ValueError(f"probabilities of shape {proba.shape}; expected [n, {num_classes}]")
    if y_true.shape != (proba.shape[0],) or len(y_true) == 0:
        raise ValueError(f"{y_true.shape} labels for {proba.shape[0]} predictions; "
                         "expected one per prediction and at least one")
    if y_true.min() < 0 or y_true.max() >= num_classes:
        raise ValueError(f"label ids must lie in 0..{num_classes - 1}, got {y_true.min()}..{y_true.max()}")
    return y_true.astype(np.int64), proba


# --- the stage ----------------------------------------------------------------------------------

RECORD_KEYS = ("classes", "family", "image_size", "preprocess", "pretrained", "train_seconds",
               "epochs_run", "params_total", "params_trainable")


@dataclass(frozen=True)
class SplitPredictions:
    """A model's predictions on the test split, in manifest order."""

    paths: list[str]          # absolute image paths
    rel_paths: list[str]      # the same, relative to the project root (as written to CSV)
    y_true: np.ndarray        # label ids
    proba: np.ndarray         # [n, classes] probabilities
    classes: list[str]

    @property
    def y_pred(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


def evaluate(model_id: str, params: Params, paths: Paths) -> dict[str, Any]:
    """Evaluate models/<id> on the test split; write metrics/<id>.json and plots/<id>/eval/."""
    from vitbench.models import load_model

    model_dir = paths.model(model_id)
    model, record = load_model(model_dir)
    classes = read_labels(paths.labels)
    _check_record(record, model_dir, classes)
    preds = _predict(model, record, paths, classes, params.evaluate.batch_size)
    metrics = {
        "model": model_id,
        "display_name": _display_name(model_id, record),
        **compute_metrics(preds.y_true, preds.proba, len(classes)),
        "params_total": int(record["params_total"]),
        "params_trainable": int(record["params_trainable"]),
        "size_mb": round(_dir_bytes(model_dir) / 1e6, 3),
        "train_seconds": float(record["train_seconds"]),
        "epochs_run": int(record["epochs_run"]),
        "infer_images_per_second": _throughput(model, record, preds.paths,
                                               params.evaluate.batch_size),
        "pretrained": bool(record["pretrained"]),
    }
    _write_eval_dir(paths.eval_plots(model_id), model, record, metrics, preds, params)
    write_json(paths.metrics_json(model_id), metrics)
    log.info("%s: accuracy %.4f, macro F1 %.4f", model_id, metrics["accuracy"], metrics["f1_macro"])
    return metrics


def _check_record(record: dict, model_dir: Path, classes: list[str]) -> None:
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise DataError(f"{model_dir}/record.json lacks key(s) {', '.join(missing)}: "
                        "retrain the model with this version of vitbench")
    if list(record["classes"]) != classes:
        raise DataError(f"{model_dir}/record.json classes {record['classes']} differ from "
                        f"the split's labels {classes}: retrain {model_dir.name} on the current split")


def _predict(model: Any, record: dict, paths: Paths, classes: list[str],
             batch_size: int) -> SplitPredictions:
    """Class probabilities for every test image, in manifest order."""
    from vitbench.data.pipeline import labelled_paths, make_dataset

    test_paths, labels = labelled_paths(paths.split_csv("test"), classes)
    log.info("predicting %d test images", len(test_paths))
    ds = make_dataset(test_paths, labels, record["image_size"], record["preprocess"], batch_size,
                      shuffle=False, cache=False)
    batches = []
    for x, _ in tqdm(ds, total=-(-len(test_paths) // batch_size), desc="predict", unit="batch"):
        batches.append(np.asarray(model.predict_on_batch(x), dtype=np.float32))
    return SplitPredictions(test_paths, [_relative(p, paths.root) for p in test_paths],
                           labels.astype(np.int64), np.concatenate(batches), classes)


def _throughput(model: Any, record: dict, test_paths: list[str], batch_size: int) -> float:
    """Images per second of the model alone on one in-memory batch: after a warm-up call, the
    batch is timed repeatedly and the fastest run counts (as timeit does: slower runs measure
    other load on the machine, not the model)."""
    from vitbench.data.pipeline import load_images, preprocess_fn

    images = load_images(test_paths[:batch_size], record["image_size"])
    reps = -(-batch_size // len(images))
    batch = np.concatenate([images] * reps)[:batch_size]
    x = preprocess_fn(record["preprocess"])(batch.astype(np.float32))
    model.predict_on_batch(x)                                   # warm-up: tracing, allocation
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < THROUGHPUT_MAX_RUNS and (
            len(times) < THROUGHPUT_MIN_RUNS or time.perf_counter() - start < THROUGHPUT_MIN_SECONDS):
        t0 = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - t0)
    return round(batch_size / min(times), 2)


def _write_eval_dir(target: Path, model: Any, record: dict, metrics: dict,
                    preds: SplitPredictions, params: Params) -> None:
    """plots/<id>/eval/: dvclive confusion matrix, report.csv, predictions.csv and figures."""
    from dvclive import Live

    from vitbench.plots import evaluation as figures

    classes, y_true, y_pred = preds.classes, preds.y_true, preds.y_pred
    with atomic_dir(target) as tmp:
        live = Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=None)
        live.log_sklearn_plot("confusion_matrix", [classes[i] for i in y_true],
                              [classes[i] for i in y_pred],
                              title=f"Confusion matrix: {metrics['display_name']}",
                              x_label="Actual class", y_label="Predicted class")
        class_report(y_true, y_pred, classes).to_csv(tmp / "report.csv", index=False)
        predictions_table(preds.rel_paths, y_true, preds.proba, classes).to_csv(
            tmp / "predictions.csv", index=False)
        figures.save_confusion_matrix(confusion_counts(y_true, y_pred, len(classes)), classes,
                                      metrics, tmp / "confusion_matrix.png")
        if record["family"] in VIT_FAMILIES and params.evaluate.attention_samples > 0:
            _attention_figure(model, record, metrics["display_name"], preds, params,
                              tmp / "attention.png")


def _attention_figure(model: Any, record: dict, name: str, preds: SplitPredictions,
                      params: Params, out: Path) -> None:
    """attention.png: fixed test images (chosen by params.seed) beside their attention maps."""
    from vitbench.data.pipeline import load_images
    from vitbench.plots import evaluation as figures

    n = len(preds.paths)
    count = min(params.evaluate.attention_samples, n)
    idx = np.sort(np.random.default_rng(params.seed).choice(n, count, replace=False))
    chosen = [preds.paths[i] for i in idx]
    display = load_images(chosen, max(record["image_size"], ATTENTION_DISPLAY_SIZE))
    overlays = _attention_overlays(model, record, chosen, display)
    captions = [(preds.classes[preds.y_true[i]], preds.classes[preds.y_pred[i]],
                 float(preds.proba[i].max())) for i in idx]
    figures.save_attention(display, overlays, captions, name, ATTENTION_METHODS[record["family"]], out)


def _attention_overlays(model: Any, record: dict, chosen: list[str],
                        display: np.ndarray) -> np.ndarray:
    """uint8 images showing where the model attends, one per chosen test image."""
    from vitbench.plots.evaluation import heatmap_overlay

    if record["family"] == "vit_ft":
        import keras
        from vit_keras.visualize import attention_map

        was_on = keras.config.is_interactive_logging_enabled()
        keras.config.disable_interactive_logging()              # attention_map's predict() bars
        try:
            return np.stack([attention_map(model, image) for image in display])
        finally:
            if was_on:
                keras.config.enable_interactive_logging()
    from vitbench.data.pipeline import load_images, preprocess_fn
    from vitbench.models import attention_weights

    x = preprocess_fn(record["preprocess"])(
        load_images(chosen, record["image_size"]).astype(np.float32))
    weights = [np.asarray(w) for w in attention_weights(model, record, x)]
    maps = attention_rollout(weights, class_token=False)
    return np.stack([heatmap_overlay(img, m) for img, m in zip(display, maps)])


def _display_name(model_id: str, record: dict) -> str:
    from vitbench.models import display_name

    return str(record.get("display_name") or display_name(model_id, record))


def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _relative(path: str, root: Path) -> str:
    """`path` relative to the project root (posix), so outputs survive moving the checkout."""
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()
