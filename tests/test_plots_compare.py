"""The compare figures: every one drawn, and no text drawn over other text."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from vitbench.report import figures as figures
from vitbench.plots.common import RIGHT, WRONG
from vitbench.report.figures import GridSample

MODELS = ["MobileNetV2 (transfer)", "MobileNetV2 (fine-tuned)", "ViT from scratch (SPT+LSA)",
          "ViT-B/32 (transfer)", "ViT-B/32 (fine-tuned)"]
TWELVE = ["Dog", "Elephant", "Giraffe", "Guitar", "Horse", "House", "Person", "Tiger",
          "Zebra", "Butterfly", "Hot air balloon", "Snowman"]


def samples(count: int, classes: list[str], seed: int = 0) -> list[GridSample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        actual = classes[i % len(classes)]
        preds = [(m, str(rng.choice(classes)) if rng.random() < 0.5 else actual,
                  float(rng.uniform(0.2, 1.0))) for m in MODELS]
        image = rng.integers(0, 255, (int(rng.integers(60, 200)), int(rng.integers(60, 200)), 3),
                             dtype=np.uint8)
        out.append(GridSample(image, actual, preds))
    return out


def visible_texts(fig: Figure) -> list[Text]:
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return [t for t in texts if t.get_figure() is fig]


def assert_no_overlap(fig: Figure, texts: list[Text]) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for (a, box_a), (b, box_b) in combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


def grid_lines(fig: Figure) -> list[Text]:
    """The per-sample lines: "Actual = ..." and "<model> = <class> <confidence>"."""
    return [t for t in visible_texts(fig)
            if t.get_text().startswith("Actual = ") or t.get_text().split(" = ")[0] in MODELS]


@pytest.mark.parametrize("count,classes", [(1, ["cat", "dog"]), (2, ["cat", "dog"]),
                                           (10, TWELVE), (12, TWELVE), (13, ["cat", "dog"])])
def test_predictions_grid_text_never_overlaps(count: int, classes: list[str]) -> None:
    fig = figures.predictions_grid_figure(samples(count, classes))
    lines = grid_lines(fig)
    assert len(lines) == count * (1 + len(MODELS))           # "Actual = ..." + one per model
    assert_no_overlap(fig, visible_texts(fig))


def test_predictions_grid_colours_right_and_wrong() -> None:
    sample = GridSample(np.zeros((32, 32, 3), np.uint8), "Dog",
                        [("MobileNetV2 (transfer)", "Tiger", 0.419), ("ViT-B/32 (fine-tuned)", "Dog", 0.859)])
    fig = figures.predictions_grid_figure([sample])
    colour = {t.get_text(): mcolors.to_hex(t.get_color()) for t in grid_lines(fig)}
    assert colour["MobileNetV2 (transfer) = Tiger 41.9%"] == WRONG
    assert colour["ViT-B/32 (fine-tuned) = Dog 85.9%"] == RIGHT
    assert "Actual = Dog" in colour


def test_predictions_grid_rejects_no_samples() -> None:
    with pytest.raises(ValueError, match="at least one"):
        figures.predictions_grid_figure([])


@pytest.mark.slow
def test_predictions_grid_png_grows_with_samples(tmp_path: Path) -> None:
    sizes = []
    for count in (1, 5, 12):
        out = figures.save_predictions_grid(samples(count, TWELVE), tmp_path / f"grid{count}.png")
        with Image.open(out) as img:
            sizes.append(img.size)
    assert sizes[0][0] < sizes[1][0]                         # wider up to five per row
    assert sizes[1][1] < sizes[2][1]                         # then taller


def rows(accuracies: list[float], sizes: list[float]) -> list[dict]:
    kinds = ["CNN", "CNN", "ViT", "ViT", "ViT"]
    from vitbench.core.stats import accuracy_interval

    out = []
    for m, k, a, s in zip(MODELS, kinds, accuracies, sizes):
        ci = accuracy_interval(round(a * 60), 60)
        out.append({"model": m, "kind": k, "accuracy": a, "loss": 1.5 - a, "size_mb": s,
                    "params_total": int(s * 250_000), "accuracy_ci_low": ci.low,
                    "accuracy_ci_high": ci.high})
    return out


@pytest.mark.parametrize("accuracies,sizes", [
    ([0.6, 0.8, 0.3, 0.85, 0.95], [9.1, 9.1, 1.7, 350.2, 350.2]),
    ([1.0, 1.0, 1.0, 1.0, 1.0], [9.1, 9.1, 1.7, 350.2, 350.2]),   # every point at 100%
    ([0.5, 0.5, 0.5, 0.5, 0.5], [5.0, 5.0, 5.0, 5.0, 5.0]),       # all on one spot
])
@pytest.mark.slow
def test_size_vs_accuracy_labels_never_overlap(accuracies: list[float], sizes: list[float]) -> None:
    fig = figures.size_vs_accuracy_figure(rows(accuracies, sizes))
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_visible()]
        assert labels, "at least one point is labelled"
        assert_no_overlap(fig, labels)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        f"{m} ({f})" for m, f in zip(MODELS, ["CNN", "CNN", "ViT", "ViT", "ViT"])]


def test_accuracy_loss_names_every_model(tmp_path: Path) -> None:
    fig = figures.accuracy_loss_figure(rows([0.6, 0.8, 0.3, 0.85, 0.95], [1, 2, 3, 4, 5]))
    acc_ax, loss_ax = fig.axes
    ticks = {t.get_text(): y for t, y in zip(acc_ax.get_yticklabels(), acc_ax.get_yticks())}
    assert sorted(ticks, key=ticks.get, reverse=True) == MODELS     # first model on top
    assert {t.get_text() for t in acc_ax.texts} == {"60.0%", "80.0%", "30.0%", "85.0%", "95.0%"}
    assert len(loss_ax.patches) == 5
    caps = [c for c in acc_ax.collections if c.get_segments()]          # the 95% error bars
    assert len(caps[0].get_segments()) == 5
    assert figures.save_accuracy_loss(rows([0.6] * 5, [1] * 5), tmp_path / "a.png").stat().st_size


@pytest.mark.parametrize("n_classes", [2, 12, pytest.param(80, marks=pytest.mark.slow)])
def test_per_class_f1_heatmap(n_classes: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(n_classes)
    f1 = pd.DataFrame(rng.random((n_classes, 5)), columns=MODELS,
                      index=[f"class {i}" for i in range(n_classes)])
    f1.iloc[0, 0] = np.nan                                   # a class one model never reported
    fig = figures.per_class_f1_figure(f1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(f1.index)
    values = [t.get_text() for t in ax.texts]
    assert len(values) == (n_classes * 5 if n_classes <= figures.MAX_ANNOTATED_CLASSES else 0)
    if values:
        assert values[0] == "-" and values[1] == f"{f1.iloc[0, 1]:.2f}"
    assert figures.save_per_class_f1(f1, tmp_path / "f1.png").stat().st_size > 0


@pytest.mark.slow
def test_robustness_figure_has_a_panel_per_corruption_and_a_line_per_model(tmp_path: Path) -> None:
    from vitbench.evaluate.robustness import CORRUPTIONS, SEVERITIES

    curves = []
    for k, (model, kind) in enumerate(zip(MODELS, ["CNN", "CNN", "ViT", "ViT", "ViT"])):
        table = pd.DataFrame([{"corruption": c, "severity": s, "accuracy": 0.9 - 0.1 * s - 0.02 * k}
                              for c in CORRUPTIONS for s in SEVERITIES])
        curves.append({"model": model, "kind": kind, "clean": 0.9, "table": table})
    fig = figures.robustness_figure(curves)
    used = [ax for ax in fig.axes if ax.axison]
    assert len(used) == len(CORRUPTIONS) + 1
    assert all(len(ax.lines) == len(MODELS) for ax in used)
    assert list(used[0].lines[0].get_ydata()) == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert figures.save_robustness(curves, tmp_path / "r.png").stat().st_size > 5_000


def test_class_and_model_names_with_dollar_signs_are_drawn_as_text(tmp_path: Path) -> None:
    """A class folder called `$\\foo{$` is not mathtext: drawn as written, not a crash."""
    odd = ["$\\foo{$", "$x^2$", "<img src=x onerror=alert(1)>"]
    f1 = pd.DataFrame(np.full((3, 2), 0.5), columns=["$a$ (transfer)", MODELS[1]], index=odd)
    fig = figures.per_class_f1_figure(f1)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == odd
    assert figures.save_per_class_f1(f1, tmp_path / "f1.png").stat().st_size > 0
    grid = [GridSample(np.zeros((20, 20, 3), np.uint8), odd[0], [("$a$", odd[0], 0.5)])]
    assert figures.save_predictions_grid(grid, tmp_path / "grid.png").stat().st_size > 0
