"""The dogs study's figure: one training image beside the patches the ViT cuts it into (or, with
the convolutional tokenizer, one cell per token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.gridspec import GridSpec

from vitbench.models.vit.layers import ConvTokenizer, conv_stages, extract_patches
from vitbench.plots.common import plt, save_figure


def patch_grid(image: np.ndarray, patch_size: int, path: str | Path,
               title: str | None = None) -> Path:
    """Write `path`: the image [S, S, 3] (uint8, or floats in 0..1) on the left, its
    (S/patch_size)^2 patches in a grid on the right, titled with the sizes (or `title`);
    returns `path`."""
    image = _displayable(image)
    size = image.shape[0]
    if image.ndim != 3 or image.shape[1] != size or size % patch_size:
        raise ValueError(f"patch_grid needs a square image whose side is a multiple of "
                         f"patch_size {patch_size}; got shape {image.shape}")
    n = size // patch_size
    patches = extract_patches(image, patch_size).reshape(n * n, patch_size, patch_size, 3)

    fig = plt.figure(figsize=(10, 5))
    outer = GridSpec(1, 2, figure=fig, wspace=0.08)
    ax = fig.add_subplot(outer[0])
    ax.imshow(image, interpolation="nearest")
    ax.set_title(f"Image ({size}x{size})")
    ax.axis("off")
    grid = outer[1].subgridspec(n, n, wspace=0.08, hspace=0.08)
    for i, patch in enumerate(patches):
        cell = fig.add_subplot(grid[i // n, i % n])
        cell.imshow(patch, interpolation="nearest")
        _frame(cell)
    box = outer[1].get_position(fig)
    fig.text((box.x0 + box.x1) / 2, box.y1 + 0.02, f"Patches ({n}x{n})", ha="center",
             va="bottom", fontsize=plt.rcParams["axes.titlesize"], fontweight="bold")
    fig.suptitle(title or f"{size}x{size} image, {patch_size}x{patch_size} patches: {n * n} "
                 f"patches, {patch_size * patch_size * 3} elements per patch", fontsize=12, y=1.0)
    return save_figure(fig, path)


def token_grid(image: np.ndarray, stride: int, path: str | Path) -> Path:
    """`patch_grid` for the convolutional tokenizer of token stride `stride` (`vit.patch_size`,
    log2(stride) conv + pool stages): its (S / stride)^2 tokens, one per stride x stride cell (the
    image padded with white to whole cells), titled with the receptive field each token sees."""
    image = _displayable(image)
    stages, size = conv_stages(stride), image.shape[0]
    side = ConvTokenizer.grid(size, stages)
    pad = side * stride - size
    padded = np.pad(image, ((0, pad), (0, pad), (0, 0)), constant_values=255)
    field = ConvTokenizer.receptive_field(stages)
    return patch_grid(padded, stride, path, title=(
        f"{size}x{size} image, conv tokens with stride {stride} ({stages} conv + pool stages): "
        f"{side * side} tokens, one per {stride}x{stride} cell, each seeing {field}x{field} px "
        "around it"))


def _frame(ax: plt.Axes) -> None:
    """A thin grey outline, so that white patches stay visible as cells."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#999999")
        spine.set_linewidth(0.5)


def _displayable(image: np.ndarray) -> np.ndarray:
    """uint8 RGB for imshow; floats are taken as 0..1, or 0..255 when larger."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    scale = 255.0 if image.max(initial=0) <= 1.0 else 1.0
    return np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)


def draw_tokens(cfg: Any, image: np.ndarray, path: Path) -> None:
    """plots/vit_patches.png of the `vit` section `cfg`: `token_grid` for the conv tokenizer,
    else `patch_grid`."""
    if cfg.tokenizer == "conv":
        token_grid(image, cfg.patch_size, path)
    else:
        patch_grid(image, cfg.patch_size, path)
