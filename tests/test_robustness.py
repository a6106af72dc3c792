"""The corruptions and the corruption pass (on a tiny model in test_evaluation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vitbench.evaluate.robustness import CORRUPTIONS, SEVERITIES, corrupt, corruption_accuracy


def images(n: int = 4, size: int = 112) -> np.ndarray:   # blur sigma 0.5 px at severity 1
    rng = np.random.default_rng(0)
    base = np.zeros((n, size, size, 3), np.uint8)
    base[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 200
    return np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_keeps_shape_and_dtype_and_changes_the_images(name: str) -> None:
    x = images()
    for severity in SEVERITIES:
        out = corrupt(x, name, severity, seed=1)
        assert out.shape == x.shape and out.dtype == np.uint8
        assert not np.array_equal(out, x), (name, severity)
    assert np.array_equal(corrupt(x, name, 2, seed=1), corrupt(x, name, 2, seed=1))   # seeded


def test_severity_grows() -> None:
    x = images()
    distance = {name: [np.abs(corrupt(x, name, s, seed=1).astype(float) - x).mean() for s in SEVERITIES]
                for name in CORRUPTIONS}
    for name, d in distance.items():
        assert d[0] < d[1] < d[2], (name, d)
    contrast = [corrupt(x, "contrast", s).std() for s in SEVERITIES]
    assert contrast[0] > contrast[1] > contrast[2]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        corrupt(images(), "snow", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(images(), "jpeg", 4)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(images().astype(np.float32), "jpeg", 1)


def test_corruption_accuracy_of_a_brightness_classifier() -> None:
    """A 'model' that calls bright images class 1: brightening flips its dark images."""
    x = np.concatenate([np.full((3, 8, 8, 3), 40, np.uint8), np.full((3, 8, 8, 3), 200, np.uint8)])
    y = np.array([0, 0, 0, 1, 1, 1])

    def predict(batch: np.ndarray) -> np.ndarray:
        bright = batch.mean(axis=(1, 2, 3)) > 100
        return np.stack([~bright, bright], axis=1).astype(np.float32)

    table = corruption_accuracy(predict, x, y, seed=0)
    assert len(table) == len(CORRUPTIONS) * len(SEVERITIES)
    acc = table.set_index(["corruption", "severity"])["accuracy"]
    assert acc["brightness", 1] == 1.0              # 40 + 25 stays dark
    assert acc["brightness", 3] == 0.5              # 40 + 127 turns bright: the dark half is wrong
    assert acc["jpeg", 1] == 1.0
