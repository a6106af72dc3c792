"""`vitbench predict`: classify new image files with a trained model.

Inputs go through `vitbench.data.imageprep.prepare_image`, the preparation every training image
went through (decode with EXIF orientation and transparency on white, LANCZOS downscale to the
`max_side` recorded in the model's record.json, antialiased resize to the model size), then the
model's preprocessing. A file that is not a usable image is reported and skipped; the others still
get their predictions. Nothing to predict at all is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitbench.core.errors import DataError, short_list
from vitbench.core.fsutil import read_json
from vitbench.core.paths import Paths

log = logging.getLogger(__name__)
MAX_SIDE = 100_000   # the largest input.max_side a record may carry (clean.max_side is far below)


@dataclass
class Prediction:
    """One file's top-k classes with their probabilities (best first)."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def confidence(self) -> float:
        return self.top[0][1]


@dataclass
class Failure:
    """A file that could not be classified, and why."""

    path: str
    reason: str


def best_model_id(paths: Paths) -> str:
    """The best model by accuracy, as compare writes it: `best.accuracy.models` of
    metrics/compare_detail.json (compare.json is flat and names no model)."""
    detail = paths.metrics_json("compare_detail")
    if not detail.is_file():
        raise DataError(f"{detail} not found: run `dvc repro` first, or pass --model ID")
    try:
        tied = read_json(detail)["best"]["accuracy"]["models"]
    except (ValueError, KeyError, TypeError):
        tied = None
    if not tied or not isinstance(tied, list):
        raise DataError(f"{detail} names no best model (best.accuracy.models): re-run "
                        "`dvc repro compare`, or pass --model ID")
    return str(tied[0])  # ties come in pipeline order


def model_dir_of(paths: Paths, model: str | None) -> Path:
    """The folder of `--model`: a model id, a saved model's folder, or (None) the best model by
    accuracy; a DataError listing the valid ids (and those trained here) for anything else."""
    from vitbench.models.registry import model_ids

    ids = model_ids()
    if model is None:
        model = best_model_id(paths)
    if model in ids:
        return paths.model(model)
    if Path(model).is_dir():
        return Path(model)
    trained = [m for m in ids if paths.model(m).is_dir()]
    raise DataError(f"--model {model!r} is neither a model id nor a model folder: the model ids "
                    f"are {', '.join(ids)} (trained in {paths.root / 'models'}: "
                    f"{', '.join(trained) or 'none yet, run `dvc repro`'})")


def warn_if_random_weights(record: dict[str, Any], model_dir: Path) -> bool:
    """Log a warning (stderr) when the model is meant to start from pretrained weights but was
    trained from random ones (`pretrained: auto` without network or weights file); returns it."""
    from vitbench.evaluate.card import random_weights

    model_id = str(record.get("id", model_dir.name))
    if not random_weights(model_id, record):
        return False
    log.warning("%s was trained from RANDOM weights, not from the pretrained ImageNet weights a "
                "%s model starts from (record.json: pretrained = false): expect the accuracy of a "
                "model trained from scratch (see %s/README.md)", model_dir, model_id, model_dir)
    return True


def check_inputs(record: dict[str, Any], where: Path) -> None:
    """A DataError naming the record and the field unless it says how to feed the model: its
    classes, image_size, a known preprocess and (when recorded) a positive input.max_side."""
    from vitbench.data.pipeline import PREPROCESS

    missing = [k for k in ("classes", "image_size", "preprocess") if k not in record]
    if missing:
        raise DataError(f"{where} lacks {', '.join(missing)}: retrain the model with vitbench")
    if not isinstance(record["preprocess"], str) or record["preprocess"] not in PREPROCESS:
        raise DataError(f"{where}: preprocess = {record['preprocess']!r} is not allowed; expected "
                        f"one of {', '.join(PREPROCESS)}")
    transform = record.get("input", {})
    if not isinstance(transform, dict):
        raise DataError(f"{where}: input = {transform!r} must be the recorded input transform")
    max_side = transform.get("max_side")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int)
                                 or not 1 <= max_side <= MAX_SIDE):
        raise DataError(f"{where}: input.max_side = {max_side!r} is not allowed; expected an "
                        f"integer from 1 to {MAX_SIDE}")


def collect_inputs(inputs: list[Path]) -> tuple[list[Path], list[Failure]]:
    """Expand folders (recursively, sorted, hidden files skipped); a missing path or a folder with
    no files is a failure, and no file at all is a DataError."""
    files: list[Path] = []
    failures: list[Failure] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*")
                           if p.is_file() and not any(part.startswith(".") for part in
                                                      p.relative_to(item).parts))
            if not found:
                failures.append(Failure(str(item), "the folder holds no files"))
            files += found
        elif item.is_file():
            files.append(item)
        else:
            failures.append(Failure(str(item), "no such file or folder"))
    if not files:
        why = short_list((f"{f.path}: {f.reason}" for f in failures), sep="; ")
        raise DataError(f"nothing to predict: no image files in the input(s) ({why})")
    return files, failures


def predict_files(model_dir: Path, files: list[Path], top_k: int = 3, batch_size: int = 32,
                  progress: bool = True) -> tuple[list[Prediction], list[Failure]]:
    """Classify `files` with the model saved in `model_dir`."""
    from tqdm import tqdm

    from vitbench.data.imageprep import BadImageError
    from vitbench.data.imageprep import prepare_image
    from vitbench.data.pipeline import preprocess_fn
    from vitbench.models.store import RECORD_FILE, load_model

    model, record = load_model(model_dir)
    check_inputs(record, model_dir / RECORD_FILE)
    warn_if_random_weights(record, model_dir)
    classes: list[str] = list(record["classes"])
    size, preprocess = int(record["image_size"]), preprocess_fn(record["preprocess"])
    max_side = record.get("input", {}).get("max_side")
    if "input" not in record:
        log.warning("%s/record.json does not record its input transform (a model trained before "
                    "vitbench recorded it): images are resized straight to %d px", model_dir, size)
    k = max(1, min(top_k, len(classes)))

    images, kept, failures = [], [], []
    for path in tqdm(files, desc="read images", unit="img", disable=not progress or None):
        try:
            images.append(prepare_image(path, max_side, size))
        except BadImageError as exc:
            failures.append(Failure(str(path), f"{exc.reason}: {exc.detail}"))
            continue
        kept.append(path)
    predictions = []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch",
                      disable=not progress or None):
        batch = np.stack(images[start:start + batch_size]).astype(np.float32)
        proba = np.asarray(model.predict_on_batch(preprocess(batch)), dtype=np.float64)
        for path, row in zip(kept[start:start + batch_size], proba):
            order = np.argsort(-row)[:k]
            predictions.append(Prediction(str(path), [(classes[i], float(row[i])) for i in order]))
    return predictions, failures
