"""Keras code of the `archs.ARCHS` entries that is more than a keras.applications constructor:
a constructor wrapper and a fix-up after loading ImageNet weights (named there with `later`)."""

from __future__ import annotations

import keras
import numpy as np

IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def fold_efficientnet_stddev(base: keras.Model) -> None:
    """keras.applications.EfficientNet adds, only when built with weights="imagenet", a
    Rescaling by 1/sqrt(stddev) after its Normalization layer. Built with weights=None (so that
    the architecture never depends on the weights), the same result is had by multiplying the
    Normalization variance by stddev: (x - m) / sqrt(v * s) == (x - m) / sqrt(v) / sqrt(s)."""
    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    variance = norm.adapt_variance  # the stored variable; norm.variance is derived from it
    variance.assign(variance * np.asarray(IMAGENET_STDDEV_RGB, dtype=variance.dtype))
    norm.finalize_state()


def efficientnetv2b0(name: str = "base", **kwargs: object) -> keras.Model:
    """EfficientNetV2B0 named `name`: its own `name` argument also picks its block table."""
    base = keras.applications.EfficientNetV2B0(**kwargs)
    base.name = name
    return base
