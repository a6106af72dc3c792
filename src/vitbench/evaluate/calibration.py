"""Calibration: does a model's confidence match how often it is right?

The confidence of a prediction is its top probability. The expected calibration error (ECE,
Guo et al. 2017, "On calibration of modern neural networks") sorts the test images into
`BINS` = 15 equal-width confidence bins (0, 1/15], (1/15, 2/15], ..., (14/15, 1] (a confidence of
exactly 0 goes to the first bin) and averages |accuracy - mean confidence| over the bins,
weighted by their share of images:

    ECE = sum_b (n_b / n) * |acc_b - conf_b|

0 is perfect; an over-confident model has conf_b > acc_b. The per-bin table draws the
reliability diagram (plots/<id>/eval/reliability.png).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BINS = 15


def reliability_table(y_true: np.ndarray, proba: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """One row per confidence bin: low, high, count, accuracy, confidence (NaN when empty)."""
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(y_true) or len(y_true) == 0:
        raise ValueError(f"reliability needs [n, classes] probabilities for n labels, got "
                         f"{proba.shape} for {y_true.shape}")
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    hits = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": count,
                             "accuracy": np.where(count > 0, hits / count, np.nan),
                             "confidence": np.where(count > 0, conf_sum / count, np.nan)})


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = BINS) -> float:
    """ECE over `bins` equal-width confidence bins (see the module docstring)."""
    table = reliability_table(y_true, proba, bins)
    used = table[table["count"] > 0]
    weights = used["count"] / used["count"].sum()
    return float((weights * (used["accuracy"] - used["confidence"]).abs()).sum())
