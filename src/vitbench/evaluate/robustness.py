"""Robustness: accuracy on the test images under common corruptions, made on the fly.

Five corruptions of ImageNet-C (Hendrycks & Dietterich 2019, "Benchmarking neural network
robustness to common corruptions and perturbations") at three severities each, their severities
1, 3 and 5. Each is applied to the test images as the model sees them (decoded and resized to
its input size, uint8), so no image is decoded again and every model gets the same corruption
relative to its input:

| corruption | severity 1, 2, 3 | on images scaled to 0..1 |
|---|---|---|
| gaussian_noise | sigma 0.08, 0.18, 0.38 | x + N(0, sigma), seeded |
| gaussian_blur | sigma 1, 3, 6 pixels at 224 px | Gaussian filter, sigma scaled to the input size |
| jpeg | quality 25, 15, 7 | JPEG encode and decode (Pillow) |
| brightness | +0.1, +0.3, +0.5 | x + c |
| contrast | factor 0.4, 0.2, 0.05 | (x - mean) * c + mean, per image |

Results are clipped to 0..1 and rounded back to uint8.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

SEVERITIES = (1, 2, 3)
NOISE_SIGMA = (0.08, 0.18, 0.38)
BLUR_SIGMA_224 = (1.0, 3.0, 6.0)
JPEG_QUALITY = (25, 15, 7)
BRIGHTNESS = (0.1, 0.3, 0.5)
CONTRAST = (0.4, 0.2, 0.05)


def _to_unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def gaussian_noise(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = NOISE_SIGMA[severity - 1]
    return _to_uint8(_to_unit(images) + rng.normal(0.0, sigma, images.shape).astype(np.float32))


def gaussian_blur(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    sigma = BLUR_SIGMA_224[severity - 1] * images.shape[1] / 224
    return _to_uint8(ndimage.gaussian_filter(_to_unit(images), sigma=(0, sigma, sigma, 0)))


def jpeg(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY[severity - 1])
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return out


def brightness(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    return _to_uint8(_to_unit(images) + BRIGHTNESS[severity - 1])


def contrast(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    x = _to_unit(images)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return _to_uint8((x - mean) * CONTRAST[severity - 1] + mean)


Corruption = Callable[[np.ndarray, int, int], np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "jpeg": jpeg,
    "brightness": brightness,
    "contrast": contrast,
}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """`images` (uint8 [n, h, w, 3]) under corruption `name` at `severity` (1..3)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [n, h, w, 3], got {images.dtype} {images.shape}")
    return CORRUPTIONS[name](images, severity, seed)


def corruption_accuracy(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                        y_true: np.ndarray, seed: int) -> pd.DataFrame:
    """Accuracy of `predict` (uint8 images -> class probabilities) under every corruption and
    severity: one row per (corruption, severity) with columns corruption, severity, accuracy."""
    rows = []
    for k, name in enumerate(CORRUPTIONS):
        for severity in SEVERITIES:
            proba = predict(corrupt(images, name, severity, seed=seed * 100 + k * 10 + severity))
            rows.append({"corruption": name, "severity": severity,
                         "accuracy": float(np.mean(proba.argmax(axis=1) == y_true))})
    return pd.DataFrame(rows)
