"""Expected calibration error and the reliability table on hand-made probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from vitbench.evaluate.calibration import BINS, expected_calibration_error, reliability_table


def probs(top: list[float], classes: int = 4) -> np.ndarray:
    """Rows whose class 0 has probability `top`, the rest shared equally."""
    rows = [[t] + [(1 - t) / (classes - 1)] * (classes - 1) for t in top]
    return np.array(rows)


def test_ece_by_hand() -> None:
    # 4 images at confidence 0.9 (3 right), 2 at 0.5 (both wrong), 2 at 0.3 (1 right)
    proba = probs([0.9] * 4 + [0.5] * 2 + [0.3] * 2)
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    # bins: 0.9 -> |0.75 - 0.9| = .15 (weight 4/8); 0.5 -> |0 - 0.5| (2/8); 0.3 -> |0.5 - 0.3| (2/8)
    expected = 4 / 8 * 0.15 + 2 / 8 * 0.5 + 2 / 8 * 0.2
    assert expected_calibration_error(y, proba) == pytest.approx(expected)


def test_a_perfectly_calibrated_model_has_zero_ece() -> None:
    proba = probs([1.0] * 5)
    assert expected_calibration_error(np.zeros(5, int), proba) == 0.0
    # confidence 0.6 with 3 of 5 right: calibrated within its bin
    assert expected_calibration_error(np.array([0, 0, 0, 1, 2]), probs([0.6] * 5)) == pytest.approx(0)


def test_reliability_table_bins_and_edges() -> None:
    proba = probs([1 / 15, 1 / 15 + 1e-9, 1.0], classes=2)[:, :2]
    proba = proba / proba.sum(axis=1, keepdims=True)
    table = reliability_table(np.array([0, 0, 1]), proba)
    assert len(table) == BINS and table["count"].sum() == 3
    assert table.loc[0, "high"] == pytest.approx(1 / 15)
    assert table["count"].iloc[-1] == 1 and table["accuracy"].iloc[-1] == 0.0
    assert table["accuracy"].isna().sum() == BINS - int((table["count"] > 0).sum())


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        reliability_table(np.zeros(3, int), np.ones((2, 3)) / 3)
