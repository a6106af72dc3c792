"""Figures of the data stages: the augmentation preview."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from vitbench.plots.common import save_figure

MAX_ROWS = 6
MAX_VARIANTS = 4
CELL_INCHES = 1.9
FRAME = "#b0b0b0"


def augment_preview(originals: Sequence[np.ndarray], variants: Sequence[Sequence[np.ndarray]],
                    class_names: Sequence[str], path: str | Path, *,
                    title: str = "Training images (left) and their augmented copies",
                    online: Sequence[Sequence[np.ndarray]] | None = None) -> Path:
    """A grid with one row per sample (up to 6): the original, up to 4 augmented copies, then up
    to 4 online-augmented versions (what the model sees in training).

    `originals[i]` is an HxWx3 uint8 image of class `class_names[i]`; `variants[i]` its copies;
    `online[i]` (optional) its online-augmented versions.
    """
    if not originals:
        raise ValueError("augment_preview needs at least one image")
    if not len(originals) == len(variants) == len(class_names):
        raise ValueError(f"augment_preview: {len(originals)} originals, {len(variants)} variant "
                         f"lists and {len(class_names)} class names must match")
    online = online if online is not None else [[] for _ in originals]
    if len(online) != len(originals):
        raise ValueError(f"augment_preview: {len(originals)} originals but {len(online)} online lists")
    n_rows = min(MAX_ROWS, len(originals))
    n_copies = min(MAX_VARIANTS, max(len(v) for v in variants[:n_rows]))
    n_online = min(MAX_VARIANTS, max(len(v) for v in online[:n_rows]))
    n_cols = 1 + n_copies + n_online
    headers = ["original", *(f"copy {j}" if n_online else f"augmented {j}"
                             for j in range(1, n_copies + 1)),
               *(f"online {j}" for j in range(1, n_online + 1))]
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False,
                             figsize=(CELL_INCHES * n_cols + 0.8, CELL_INCHES * n_rows + 0.6))
    for i in range(n_rows):
        copies, seen = list(variants[i])[:n_copies], list(online[i])[:n_online]
        images = [originals[i], *copies, *[None] * (n_copies - len(copies)), *seen]
        for j, ax in enumerate(axes[i]):
            _cell(ax, images[j] if j < len(images) else None)
            if i == 0:
                ax.set_title(headers[j])
        axes[i][0].set_ylabel(class_names[i], fontsize=12, fontweight="bold", labelpad=8)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.tight_layout()
    return save_figure(fig, path)


def _cell(ax: plt.Axes, image: np.ndarray | None) -> None:
    """One image in a hairline frame, no ticks; a blank cell when there is no image."""
    if image is None:
        ax.axis("off")
        return
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():   # the frame keeps white images' outline visible
        spine.set_visible(True)
        spine.set_edgecolor(FRAME)
        spine.set_linewidth(0.6)
    ax.imshow(image)
