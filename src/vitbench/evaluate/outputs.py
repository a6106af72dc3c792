"""What evaluate writes about a model's test results, and how every reader reads it back.

metrics/<id>.json is the DVC metric: the contract's headline numbers only (`HEADLINE_KEYS`, so
`dvc metrics show` and `dvc exp show` stay narrow); metrics/<id>_detail.json holds the rest (names,
kind, input size and preprocessing, the other figures). The model card, the compare stage and the
experiment summaries read them through `read_model_metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitbench.core.errors import DataError
from vitbench.core.fsutil import read_json
from vitbench.core.paths import Paths

# metrics/<id>.json, in this order; corruption_accuracy is absent when evaluate.robustness is
# false, steps_run when the training record has none
HEADLINE_KEYS = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1_macro", "ece",
                 "corruption_accuracy", "chance_p", "pretrained", "train_seconds", "steps_run")
OPTIONAL_KEYS = ("corruption_accuracy", "steps_run")
REQUIRED_KEYS = tuple(k for k in HEADLINE_KEYS if k not in OPTIONAL_KEYS)
# metrics/<id>_detail.json: at least these (the model's identity is the registry's word)
DETAIL_KEYS = ("display_name", "kind", "meant_pretrained",
               "image_size", "loss", "top5_accuracy", "precision_macro", "recall_macro",
               "f1_weighted", "f1_macro_ci_low", "f1_macro_ci_high", "params_total",
               "params_trainable", "size_mb", "epochs_run", "infer_images_per_second")


def split_headline(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics/<id>.json, metrics/<id>_detail.json): the HEADLINE_KEYS present, numbers and
    booleans only (a DVC metric that `dvc metrics show` and `dvc exp show` keep narrow), and
    everything else (names, kind, input size and preprocessing, the other figures)."""
    headline = {k: metrics[k] for k in HEADLINE_KEYS if k in metrics}
    bad = {k: v for k, v in headline.items() if not isinstance(v, (int, float))}
    if bad:
        raise ValueError(f"headline metric(s) that are not numbers: {bad}")
    return headline, {k: v for k, v in metrics.items() if k not in headline}


def read_model_metrics(paths: Paths, model_id: str) -> dict[str, Any]:
    """Everything evaluate wrote about a model's test results: metrics/<id>.json (the headline
    numbers) and metrics/<id>_detail.json (names, kind, input size, every other figure) merged;
    a missing file or key is a DataError naming it."""
    return {**_read_keys(paths.metrics_json(model_id), REQUIRED_KEYS, model_id),
            **_read_keys(paths.detail_json(model_id), DETAIL_KEYS, model_id)}


def _read_keys(path: Path, keys: tuple[str, ...], model_id: str) -> dict[str, Any]:
    """A JSON object evaluate wrote, with every one of `keys`; a DataError naming the file else."""
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro evaluate@{model_id}` first")
    data = read_json(path)
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"{path} lacks key(s) {', '.join(missing)}: re-run evaluate@{model_id}")
    return data
