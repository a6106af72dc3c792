"""Figures of the evaluate stage: the confusion matrix, the reliability diagram, and the ViT
attention maps or CNN Grad-CAM maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, PercentFormatter
from PIL import Image

from vitbench.plots.common import RIGHT, WRONG, save_figure

MAX_ANNOTATED_CLASSES = 30   # above this the counts no longer fit in the cells


def save_confusion_matrix(cm: np.ndarray, classes: list[str], metrics: dict[str, Any],
                          out: str | Path) -> Path:
    """confusion_matrix.png: counts per (actual, predicted) with class names; diagonal = correct."""
    n = len(classes)
    side = min(max(4.5, 0.5 * n + 2.5), 22.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test images")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    ax.set_xticks(range(n), classes, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("Actual class")
    ax.set_title(f"{metrics['display_name']}: confusion matrix on the test split\n"
                 f"accuracy {metrics['accuracy']:.1%}, macro F1 {metrics['f1_macro']:.3f}")
    if n <= MAX_ANNOTATED_CLASSES:
        _annotate_counts(ax, cm)
    ax.spines[:].set_visible(False)
    return save_figure(fig, out)


def _annotate_counts(ax: plt.Axes, cm: np.ndarray) -> None:
    threshold = cm.max() / 2 if cm.max() else 1
    size = 10 if len(cm) <= 12 else 8
    for (i, j), count in np.ndenumerate(cm):
        if count or i == j:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=size,
                    color="white" if count > threshold else "black")


def heatmap_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """`image` (uint8 HxWx3) blended with `mask` (0..1, any grid size) coloured as a heat map."""
    h, w = image.shape[:2]
    grid = Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8))
    upsampled = np.asarray(grid.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
    heat = plt.get_cmap("jet")(upsampled)[..., :3] * 255
    blended = (1 - alpha) * image.astype(np.float32) + alpha * heat
    return np.clip(blended, 0, 255).astype(np.uint8)


def save_attention(images: np.ndarray, overlays: np.ndarray,
                   captions: list[tuple[str, str, float]], model_name: str, method: str,
                   out: str | Path) -> Path:
    """attention.png / gradcam.png: each test image beside its map, captioned actual vs predicted.

    `captions` holds (actual, predicted, confidence) per image; `method` says how the maps were
    made and how to read them (shown under the title).
    """
    n = len(images)
    cols = 2 if n > 1 else 1                       # pairs per row
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.4 * cols, 2.6 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (image, overlay, (actual, predicted, conf)) in enumerate(zip(images, overlays, captions)):
        left, right = axes[k // cols, 2 * (k % cols)], axes[k // cols, 2 * (k % cols) + 1]
        left.imshow(image)
        left.set_title(f"actual: {actual}", fontsize=9, fontweight="normal")
        right.imshow(overlay)
        right.set_title(f"predicted: {predicted} {conf:.0%}", fontsize=9, fontweight="normal",
                        color=RIGHT if predicted == actual else WRONG)
    fig.suptitle(f"{model_name}: where the model looks", fontweight="bold", y=1.0, va="bottom")
    fig.text(0.5, 0.995, method, ha="center", va="top", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.1 / fig.get_figheight()))
    return save_figure(fig, out)


def save_reliability(table: pd.DataFrame, metrics: dict[str, Any], out: str | Path) -> Path:
    """reliability.png: accuracy against confidence per bin (the diagonal = perfectly calibrated),
    with the number of test images per bin underneath and the ECE in the title."""
    fig, (ax, count_ax) = plt.subplots(2, 1, figsize=(5.2, 5.6), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    used = table[table["count"] > 0]
    width = float(table["high"].iloc[0] - table["low"].iloc[0])
    centres = (used["low"] + used["high"]) / 2
    ax.bar(centres, used["accuracy"], width=width * 0.9, color="#1f77b4", edgecolor="black",
           label="accuracy in the bin")
    gap = used["confidence"] - used["accuracy"]
    ax.bar(centres, gap, bottom=used["accuracy"], width=width * 0.9, color=WRONG, alpha=0.35,
           edgecolor=WRONG, label="gap to the mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title(f"{metrics['display_name']}: reliability on the test split\n"
                 f"ECE {metrics['ece']:.3f} ({len(table)} bins; 0 = perfectly calibrated)")
    count_ax.bar(centres, used["count"], width=width * 0.9, color="grey")
    count_ax.set(xlabel="confidence (top probability)", ylabel="images")
    count_ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    count_ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    fig.tight_layout()
    return save_figure(fig, out)
