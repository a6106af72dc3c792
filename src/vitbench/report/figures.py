"""Figures of the compare stage: accuracy and loss (with 95% intervals), cost against benefit,
per-class F1, predictions, robustness under corruptions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from matplotlib.transforms import Bbox

from vitbench.plots.common import RIGHT, WRONG, save_figure

KIND_COLOURS = {"CNN": "#1f77b4", "ViT": "#ff7f0e"}
KIND_MARKERS = {"CNN": "o", "ViT": "^"}
MODEL_COLOURS = ("#1f77b4", "#17becf", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#2ca02c")
GRID_MAX_COLUMNS = 5
GRID_FONT = 8.5            # points, prediction lines under each image
LINE_STEP = 12.5           # points between prediction lines
CHAR_WIDTH_IN = 0.068      # approximate width of one GRID_FONT character, inches
MAX_ANNOTATED_CLASSES = 60


@dataclass(frozen=True)
class GridSample:
    """One test image of the predictions grid: its actual class and each model's prediction."""

    image: np.ndarray                              # uint8 HxWx3
    actual: str
    predictions: list[tuple[str, str, float]]      # (model name, predicted class, confidence)


def accuracy_loss_figure(rows: list[dict[str, Any]]) -> Figure:
    """accuracy_loss.png: test accuracy and test loss per model, side by side."""
    names = [r["model"] for r in rows]
    colours = [KIND_COLOURS[r["kind"]] for r in rows]
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 0.55 * len(rows) + 1.8), sharey=True)
    y = np.arange(len(rows))[::-1]
    acc = np.array([r["accuracy"] for r in rows], dtype=float)
    loss = np.array([r["loss"] for r in rows], dtype=float)
    errors = _ci_errors(rows, acc)
    _hbars(acc_ax, y, acc, colours, [f"{v:.1%}" for v in acc], xmax=1.0, xerr=errors)
    acc_ax.set_xticks(np.linspace(0, 1, 6))
    acc_ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    acc_ax.set(xlabel="accuracy on the test split (higher is better; bars: 95% interval)",
               title="Accuracy")
    _hbars(loss_ax, y, loss, colours, [f"{v:.3f}" for v in loss], xmax=float(loss.max()) or 1.0)
    loss_ax.set(xlabel="cross-entropy on the test split (lower is better)", title="Loss")
    acc_ax.set_yticks(y, names)
    _kind_legend(fig, rows)
    fig.suptitle("Test accuracy and loss per model", fontweight="bold")
    fig.tight_layout()
    return fig


def _ci_errors(rows: list[dict[str, Any]], acc: np.ndarray) -> np.ndarray:
    """[2, n] distances from each accuracy down to and up to its 95% interval bounds."""
    low = np.array([r["accuracy_ci_low"] for r in rows], dtype=float)
    high = np.array([r["accuracy_ci_high"] for r in rows], dtype=float)
    return np.vstack([np.clip(acc - low, 0, None), np.clip(high - acc, 0, None)])


def _hbars(ax: Axes, y: np.ndarray, values: np.ndarray, colours: list[str], labels: list[str],
           xmax: float, xerr: np.ndarray | None = None) -> None:
    ax.barh(y, values, color=colours, height=0.6)
    ends = values
    if xerr is not None:
        ax.errorbar(values, y, xerr=xerr, fmt="none", ecolor="black", elinewidth=1.2, capsize=4)
        ends = values + xerr[1]
    for yi, v, text in zip(y, ends, labels):
        ax.text(v + xmax * 0.01, yi, text, va="center", fontsize=9)
    ax.set_xlim(0, xmax * 1.18)
    ax.grid(axis="x", alpha=0.3)


def _kind_legend(fig: plt.Figure, rows: list[dict[str, Any]]) -> None:
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLOURS[k]) for k in kinds]
    fig.legend(handles, kinds, loc="upper right", ncol=len(kinds), frameon=False)


def size_vs_accuracy_figure(rows: list[dict[str, Any]]) -> Figure:
    """size_vs_accuracy.png: model size (MB) and parameter count against accuracy.

    Each model has its own colour (legend below); points are also labelled beside them wherever a
    label fits without covering another label or point.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)
    acc = [float(r["accuracy"]) for r in rows]
    colours = [MODEL_COLOURS[i % len(MODEL_COLOURS)] for i in range(len(rows))]
    panels = ((axes[0], "size_mb", "model size on disk (MB, log scale)", "Size against accuracy"),
              (axes[1], "params_total", "parameters (log scale)", "Parameters against accuracy"))
    for ax, key, xlabel, title in panels:
        xs = [float(r[key]) for r in rows]
        errors = _ci_errors(rows, np.array(acc))
        for i, (r, x, a, colour) in enumerate(zip(rows, xs, acc, colours)):
            ax.errorbar(x, a, yerr=errors[:, i:i + 1], fmt="none", ecolor=colour, elinewidth=1.5,
                        capsize=4, zorder=2)
            ax.scatter(x, a, s=80, color=colour, marker=KIND_MARKERS[r["kind"]],
                       edgecolor="black", zorder=3, label=f"{r['model']} ({r['kind']})")
        ax.set_xscale("log")
        _pad_log_limits(ax, xs)
        ax.set(xlabel=xlabel, title=title)
        ax.grid(alpha=0.3, which="both")
    lows = [float(r["accuracy_ci_low"]) for r in rows]
    highs = [float(r["accuracy_ci_high"]) for r in rows]
    pad = max(0.05, (max(highs) - min(lows)) * 0.1)
    axes[0].set_ylim(max(0.0, min(lows) - pad), min(1.0, max(highs)) + pad / 2)
    axes[0].set_yticks([t for t in axes[0].get_yticks() if 0 <= t <= 1 + 1e-9])   # no 102%
    axes[0].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[0].set_ylabel("accuracy on the test split")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(rows), 3), frameon=False)
    fig.suptitle("What accuracy costs: up and to the left is better (bars: 95% interval)",
                 fontweight="bold")
    fig.tight_layout(rect=(0, 0.06 * -(-len(rows) // 3), 1, 1))
    for ax, key, _, _ in panels:           # after the layout is final, so label boxes are too
        _label_points(fig, ax, [float(r[key]) for r in rows], acc, [r["model"] for r in rows])
    return fig


def _pad_log_limits(ax: Axes, xs: list[float]) -> None:
    lo, hi = max(min(xs), 1e-6), max(max(xs), 1e-6)
    ax.set_xlim(lo / 3, hi * 3)


# label offsets from the point (points) with their alignment, in order of preference
LABEL_SPOTS = ((9, 0, "left", "center"), (-9, 0, "right", "center"), (0, 9, "center", "bottom"),
               (0, -9, "center", "top"), (9, 12, "left", "center"), (9, -12, "left", "center"),
               (-9, 12, "right", "center"), (-9, -12, "right", "center"),
               (9, 24, "left", "center"), (9, -24, "left", "center"))


def _label_points(fig: plt.Figure, ax: Axes, xs: list[float], ys: list[float],
                  names: list[str]) -> None:
    """Write each name beside its point at the first spot that stays inside the axes and covers
    no point or earlier label; drop it where none does (the legend still names every point)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    marker = 7 * fig.dpi / 72
    taken = [Bbox.from_extents(cx - marker, cy - marker, cx + marker, cy + marker)
             for cx, cy in centres]
    for name, x, y in zip(names, xs, ys):
        label = ax.annotate(name, (x, y), xytext=(0, 0), textcoords="offset points", fontsize=8.5)
        for dx, dy, ha, va in LABEL_SPOTS:
            label.set(position=(dx, dy), ha=ha, va=va)
            box = label.get_window_extent(renderer).padded(1)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(t) for t in taken):
                taken.append(box)
                break
        else:
            label.remove()


def per_class_f1_figure(f1: pd.DataFrame) -> Figure:
    """per_class_f1.png: heat map of F1 per class (rows) and model (columns), values written in."""
    n_classes, n_models = f1.shape
    fig, ax = plt.subplots(figsize=(1.5 * n_models + 3.5, min(0.38 * n_classes + 2.2, 40)))
    values = f1.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="F1")
    ax.set_xticks(range(n_models), list(f1.columns), rotation=25, ha="right")
    ax.set_yticks(range(n_classes), [str(c) for c in f1.index])
    ax.set_xlabel("model")
    ax.set_ylabel("class")
    ax.set_title("F1 per class on the test split")
    if n_classes <= MAX_ANNOTATED_CLASSES:
        for (i, j), v in np.ndenumerate(values):
            text = "-" if np.isnan(v) else f"{v:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8.5,
                    color="white" if not np.isnan(v) and (v < 0.2 or v > 0.85) else "black")
    ax.spines[:].set_visible(False)
    fig.tight_layout()
    return fig


def predictions_grid_figure(samples: list[GridSample]) -> Figure:
    """predictions_grid.png: each test image with its actual class and every model's prediction.

    One line per model under each image (green when right, red when wrong), so nothing overlaps.
    """
    if not samples:
        raise ValueError("the predictions grid needs at least one sample")
    cols = min(len(samples), GRID_MAX_COLUMNS)
    rows = -(-len(samples) // cols)
    lines = 1 + max(len(s.predictions) for s in samples)
    longest = max(len(_prediction_line(*p)) for s in samples for p in s.predictions)
    cell_w = max(2.3, CHAR_WIDTH_IN * longest + 0.5)
    image_h = min(cell_w, 2.4)
    text_h = (lines * LINE_STEP + 14) / 72
    title_h = 0.7 if cols * cell_w < 7 else 0.5
    height = rows * (image_h + text_h) + title_h
    fig = plt.figure(figsize=(cols * cell_w, height))
    grid = fig.add_gridspec(rows * 2, cols, height_ratios=[image_h, text_h] * rows,
                            left=0, right=1, bottom=0, top=1 - title_h / height,
                            hspace=0, wspace=0.06)
    for k, sample in enumerate(samples):
        r, c = divmod(k, cols)
        _grid_image(fig.add_subplot(grid[2 * r, c]), sample)
        _grid_text(fig.add_subplot(grid[2 * r + 1, c]), sample)
    sep = "\n" if cols * cell_w < 7 else " "      # a narrow figure gets a two-line title
    fig.suptitle(f"Test images: actual class and each model's prediction{sep}"
                 "(green = right, red = wrong)", fontweight="bold")
    return fig


def _prediction_line(model: str, predicted: str, confidence: float) -> str:
    return f"{model} = {predicted} {confidence:.1%}"


def _grid_image(ax: Axes, sample: GridSample) -> None:
    ax.imshow(sample.image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)


def _grid_text(ax: Axes, sample: GridSample) -> None:
    ax.axis("off")
    ax.annotate(f"Actual = {sample.actual}", (0.5, 1.0), xycoords="axes fraction",
                xytext=(0, -4), textcoords="offset points", ha="center", va="top",
                fontsize=GRID_FONT + 0.5, fontweight="bold")
    for i, (model, predicted, confidence) in enumerate(sample.predictions, start=1):
        ax.annotate(_prediction_line(model, predicted, confidence), (0.5, 1.0),
                    xycoords="axes fraction", xytext=(0, -4 - i * LINE_STEP),
                    textcoords="offset points", ha="center", va="top", fontsize=GRID_FONT,
                    color=RIGHT if predicted == sample.actual else WRONG)


def save_accuracy_loss(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Draw `accuracy_loss_figure` and write it to `out` (PNG, atomically)."""
    return save_figure(accuracy_loss_figure(rows), out)


def save_size_vs_accuracy(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Draw `size_vs_accuracy_figure` and write it to `out` (PNG, atomically)."""
    return save_figure(size_vs_accuracy_figure(rows), out)


def save_per_class_f1(f1: pd.DataFrame, out: str | Path) -> Path:
    """Draw `per_class_f1_figure` and write it to `out` (PNG, atomically)."""
    return save_figure(per_class_f1_figure(f1), out)


def save_predictions_grid(samples: list[GridSample], out: str | Path) -> Path:
    """Draw `predictions_grid_figure` and write it to `out` (PNG, atomically)."""
    return save_figure(predictions_grid_figure(samples), out)


def robustness_figure(curves: list[dict[str, Any]]) -> Figure:
    """robustness.png: accuracy against corruption severity (0 = clean), one panel per corruption
    plus their mean, one line per model (colour per model, marker per kind)."""
    corruptions = list(dict.fromkeys(c for curve in curves for c in curve["table"]["corruption"]))
    panels = ["mean of all", *corruptions]
    cols = 3
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n + 0.8),
                             sharex=True, sharey=True, squeeze=False)
    for k, curve in enumerate(curves):
        table = curve["table"]
        colour = MODEL_COLOURS[k % len(MODEL_COLOURS)]
        per_severity = {c: table[table["corruption"] == c].sort_values("severity")
                        for c in corruptions}
        mean = table.groupby("severity")["accuracy"].mean().sort_index()
        series = {"mean of all": (list(mean.index), list(mean.values)),
                  **{c: (list(t["severity"]), list(t["accuracy"])) for c, t in per_severity.items()}}
        for ax, panel in zip(axes.flat, panels):
            xs, ys = series[panel]
            ax.plot([0, *xs], [curve["clean"], *ys], marker=KIND_MARKERS[curve["kind"]],
                    color=colour, label=f"{curve['model']} ({curve['kind']})")
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("severity (0 = clean)")
        ax.set_xticks(range(0, 4))
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(curves), 3), frameon=False)
    fig.suptitle("Accuracy under common corruptions: flatter is more robust", fontweight="bold")
    fig.tight_layout(rect=(0, 0.05 * -(-len(curves) // 3) + 0.02, 1, 1))
    return fig


def save_robustness(curves: list[dict[str, Any]], out: str | Path) -> Path:
    """Draw `robustness_figure` and write it to `out` (PNG, atomically)."""
    return save_figure(robustness_figure(curves), out)
