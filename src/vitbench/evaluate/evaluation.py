"""The evaluate stage: one trained model on the test split -> metrics/<id>.json (the headline
numbers, a DVC metric), metrics/<id>_detail.json (names, kind, input and every other figure) and
plots/<id>/eval/.

One evaluation path: the test images are decoded once (resized to the model's input, uint8) and
one inference pass over them feeds the metrics (scikit-learn), their 95% intervals
(`vitbench.core.stats`), the calibration (`vitbench.evaluate.calibration`), predictions.csv and the figures;
the same array feeds the corruption passes (`vitbench.evaluate.robustness`), the throughput timing and the
attention / Grad-CAM maps. The figures come from `vitbench.evaluate.figures`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sklearn import metrics as skm

from vitbench.core import stats
from vitbench.evaluate.calibration import expected_calibration_error, reliability_table
from vitbench.core.config import Evaluate
from vitbench.data.manifest import read_labels
from vitbench.core.errors import DataError
from vitbench.core.fsutil import atomic_dir, write_json
from vitbench.core.paths import Paths
from vitbench.evaluate.outputs import split_headline

log = logging.getLogger(__name__)

TOP_K = 5
ATTENTION_DISPLAY_SIZE = 160      # pixels: attention figures show the images at least this big
THROUGHPUT_MIN_SECONDS = 1.0      # time repeated batches for at least this long ...
THROUGHPUT_MIN_RUNS = 3           # ... and at least this many times (after one warm-up run)
THROUGHPUT_MAX_RUNS = 50


# --- metrics (pure) -----------------------------------------------------------------------------

def compute_metrics(y_true: np.ndarray, proba: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy, cross-entropy, top-5 accuracy (None for <= 5 classes) and macro/weighted scores,
    from scikit-learn. `y_true` holds integer label ids, `proba` the predicted class probabilities
    `[n, num_classes]`; macro averages run over all `num_classes` (0 for a class never predicted)."""
    y_true, proba = _check_predictions(y_true, proba, num_classes)
    labels = list(range(num_classes))
    y_pred = proba.argmax(axis=1)
    macro, weighted = (skm.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                           average=avg, zero_division=0)
                       for avg in ("macro", "weighted"))
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "loss": float(skm.log_loss(y_true, proba, labels=labels)),
        "top5_accuracy": (float(skm.top_k_accuracy_score(y_true, proba, k=TOP_K, labels=labels))
                          if num_classes > TOP_K else None),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "f1_weighted": float(weighted[2]),
    }


def uncertainty(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, seed: int) -> dict[str, float]:
    """95% intervals: Wilson for the accuracy, a seeded bootstrap over the images for macro F1."""
    acc = stats.accuracy_interval(int(np.sum(y_true == y_pred)), len(y_true))
    f1 = stats.f1_macro_interval(y_true, y_pred, num_classes, seed)
    return {"accuracy_ci_low": _floor6(acc.low), "accuracy_ci_high": _ceil6(acc.high),
            "f1_macro_ci_low": _floor6(f1.low), "f1_macro_ci_high": _ceil6(f1.high)}


def chance_p(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """One-sided exact binomial p of the accuracy against the test split's majority-class rate
    (`vitbench.core.stats.chance_p`), unrounded: a model with p >= ALPHA is "at chance"."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return stats.chance_p(int(np.sum(y_true == y_pred)), len(y_true), stats.majority_rate(y_true))


def _floor6(x: float) -> float:
    """Rounded down to 6 decimals, so that a rounded interval still holds its unrounded point."""
    return math.floor(x * 1e6) / 1e6


def _ceil6(x: float) -> float:
    return math.ceil(x * 1e6) / 1e6


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix `cm[actual, predicted]` of integer label ids."""
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def class_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per class: class, precision, recall, f1, support."""
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(classes))), zero_division=0)
    return pd.DataFrame({"class": classes, "precision": precision, "recall": recall, "f1": f1,
                         "support": support})


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
    """A model's predictions on the test split, in manifest order, with the decoded images."""

    paths: list[str]          # absolute image paths
    rel_paths: list[str]      # the same, relative to the project root (as written to CSV)
    y_true: np.ndarray        # label ids
    proba: np.ndarray         # [n, classes] probabilities
    classes: list[str]
    images: np.ndarray        # uint8 [n, s, s, 3]: the images as the model sees them

    @property
    def y_pred(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


def evaluate(model_id: str, cfg: Evaluate, seed: int, paths: Paths) -> dict[str, Any]:
    """Evaluate models/<id> on the test split; write metrics/<id>.json (the headline numbers,
    HEADLINE_KEYS), metrics/<id>_detail.json (the rest) and plots/<id>/eval/; return both merged.

    `seed` fixes the bootstrap, the corruption noise and the test images shown in the figures."""
    from vitbench.models import registry
    from vitbench.models.store import WEIGHTS_FILE, load_model

    model_dir = paths.model(model_id)
    if not model_dir.is_dir():
        registry.model_spec(model_id)   # an unknown id: a ConfigError naming the known ones
    model, record = load_model(model_dir)
    classes = read_labels(paths.labels)
    _check_record(record, model_dir, classes)
    predict = _predictor(model, record["preprocess"], cfg.batch_size)
    preds = _predict(predict, record, paths, classes)
    n_classes = len(classes)
    metrics = {
        "model": model_id,
        "display_name": _display_name(model_id, record),
        **registry.identity(model_id),   # family, kind (CNN/ViT), meant_pretrained
        "image_size": int(record["image_size"]),
        "preprocess": str(record["preprocess"]),
        **compute_metrics(preds.y_true, preds.proba, n_classes),
        **uncertainty(preds.y_true, preds.y_pred, n_classes, seed),
        "chance_p": chance_p(preds.y_true, preds.y_pred),
        "ece": round(expected_calibration_error(preds.y_true, preds.proba), 6),
        "params_total": int(record["params_total"]),
        "params_trainable": int(record["params_trainable"]),
        "size_mb": round((model_dir / WEIGHTS_FILE).stat().st_size / 1e6, 3),  # not model.keras nor the card
        "train_seconds": float(record["train_seconds"]),
        "epochs_run": int(record["epochs_run"]),
        **_steps_run(record),
        "infer_images_per_second": _throughput(model, record, preds.images, cfg.batch_size),
        "pretrained": bool(record["pretrained"]),
    }
    robustness = None
    if cfg.robustness:
        from vitbench.evaluate.robustness import corruption_accuracy

        start = time.perf_counter()
        robustness = corruption_accuracy(predict, preds.images, preds.y_true, seed)
        metrics["corruption_accuracy"] = round(float(robustness["accuracy"].mean()), 6)
        log.info("corruption pass: %d corrupted copies of the test split in %.1f s",
                 len(robustness), time.perf_counter() - start)
    _write_eval_dir(paths.eval_plots(model_id), model, record, metrics, preds, robustness, cfg, seed)
    headline, detail = split_headline(metrics)
    write_json(paths.detail_json(model_id), detail)
    write_json(paths.metrics_json(model_id), headline)
    log.info("%s: accuracy %.4f [%.4f, %.4f], macro F1 %.4f, ECE %.4f", model_id,
             metrics["accuracy"], metrics["accuracy_ci_low"], metrics["accuracy_ci_high"],
             metrics["f1_macro"], metrics["ece"])
    return metrics


def _check_record(record: dict, model_dir: Path, classes: list[str]) -> None:
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise DataError(f"{model_dir}/record.json lacks key(s) {', '.join(missing)}: "
                        "retrain the model with this version of vitbench")
    if list(record["classes"]) != classes:
        raise DataError(f"{model_dir}/record.json classes {record['classes']} differ from "
                        f"the split's labels {classes}: retrain {model_dir.name} on the current split")


Predict = Callable[[np.ndarray], np.ndarray]


def _predictor(model: Any, preprocess: str, batch_size: int) -> Predict:
    """uint8 images [n, s, s, 3] -> class probabilities [n, classes], `batch_size` at a time."""
    from vitbench.data.pipeline import preprocess_fn

    fn = preprocess_fn(preprocess)

    def predict(images: np.ndarray) -> np.ndarray:
        batches = [np.asarray(model.predict_on_batch(fn(images[i:i + batch_size].astype(np.float32))),
                              dtype=np.float32)
                   for i in range(0, len(images), batch_size)]
        return np.concatenate(batches)

    return predict


def _predict(predict: Predict, record: dict, paths: Paths, classes: list[str]) -> SplitPredictions:
    """Decode the test images once and predict them, in manifest order."""
    from vitbench.data.pipeline import labelled_paths, load_images

    test_paths, labels = labelled_paths(paths.split_csv("test"), classes)
    log.info("predicting %d test images", len(test_paths))
    images = load_images(test_paths, record["image_size"])
    return SplitPredictions(test_paths, [_relative(p, paths.root) for p in test_paths],
                            labels.astype(np.int64), predict(images), classes, images)


def _throughput(model: Any, record: dict, images: np.ndarray, batch_size: int) -> float:
    """Images per second of the model alone on one in-memory batch: after a warm-up call, the
    batch is timed repeatedly and the fastest run counts (as timeit does: slower runs measure
    other load on the machine, not the model)."""
    from vitbench.data.pipeline import preprocess_fn

    reps = -(-batch_size // len(images))
    batch = np.concatenate([images[:batch_size]] * reps)[:batch_size]
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
                    preds: SplitPredictions, robustness: pd.DataFrame | None, cfg: Evaluate,
                    seed: int) -> None:
    """plots/<id>/eval/: dvclive confusion matrix, report.csv, predictions.csv, robustness.csv,
    recipe.json (record.json's training recipe, null for older models) and the figures."""
    from dvclive import Live

    from vitbench.evaluate import figures

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
        if robustness is not None:
            robustness.to_csv(tmp / "robustness.csv", index=False)
        write_json(tmp / "recipe.json", record.get("recipe"))   # compare.md states it
        figures.save_confusion_matrix(confusion_counts(y_true, y_pred, len(classes)), classes,
                                      metrics, tmp / "confusion_matrix.png")
        figures.save_reliability(reliability_table(y_true, preds.proba), metrics,
                                 tmp / "reliability.png")
        if cfg.attention_samples > 0:
            _map_figure(model, record, metrics["display_name"], preds, cfg.attention_samples,
                        seed, tmp)


def _map_figure(model: Any, record: dict, name: str, preds: SplitPredictions, samples: int,
                seed: int, folder: Path) -> None:
    """attention.png (ViTs) or gradcam.png (CNNs) in `folder`: the same test images for every
    model (chosen by `seed`) beside the family's saliency map (`models.registry.Saliency`)."""
    from vitbench.data.pipeline import preprocess_fn
    from vitbench.models.registry import family
    from vitbench.evaluate import figures as figures
    from vitbench.evaluate.saliency import saliency_maps

    n = len(preds.paths)
    idx = np.sort(np.random.default_rng(seed).choice(n, min(samples, n), replace=False))
    images = preds.images[idx]
    side = max(images.shape[1], ATTENTION_DISPLAY_SIZE)
    display = np.stack([_upscale(image, side) for image in images])
    fam = family(record["family"])
    x = np.asarray(preprocess_fn(record["preprocess"])(images.astype(np.float32)))
    maps = saliency_maps(model, fam, x)
    overlays = np.stack([figures.heatmap_overlay(img, m) for img, m in zip(display, maps)])
    captions = [(preds.classes[preds.y_true[i]], preds.classes[preds.y_pred[i]],
                 float(preds.proba[i].max())) for i in idx]
    figures.save_attention(display, overlays, captions, name, fam.saliency.method,
                           folder / fam.saliency.figure)


def _upscale(image: np.ndarray, side: int) -> np.ndarray:
    """A model-size uint8 image enlarged (bilinear) to `side` pixels for the figures."""
    if image.shape[0] == side:
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))


def _steps_run(record: dict) -> dict[str, int]:
    """`steps_run` (optimizer steps of the last training phase) when the record has it."""
    steps = record.get("steps_run")
    return {} if steps is None else {"steps_run": int(steps)}


def _display_name(model_id: str, record: dict) -> str:
    from vitbench.models.store import display_name

    return str(record.get("display_name") or display_name(model_id, record))


def _relative(path: str, root: Path) -> str:
    """`path` relative to the project root (posix), so outputs survive moving the checkout."""
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()
