"""The figure of `vitbench cv`: each model's pooled accuracy over every image with its Wilson
interval, its per-fold accuracies as dots, and the chance line (the majority class)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitbench.plots.common import plt, save_figure

COLORS = {"CNN": "#1f6feb", "ViT": "#e36209"}


def draw_cv(summary: dict[str, Any], path: Path) -> Path:
    """Write plots/cv/summary.png for `vitbench.experiments.cv.summarize`'s summary."""
    models = summary["models"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(models), 4.4))
    for x, (line, s) in enumerate(models.items()):
        color = "0.6" if s["at_chance"] else COLORS.get(s["kind"], "0.3")
        ax.bar(x, s["accuracy"], color=color, alpha=0.35, width=0.6)
        ax.errorbar(x, s["accuracy"], yerr=[[s["accuracy"] - s["ci_low"]], [s["ci_high"] - s["accuracy"]]],
                    fmt="o", color=color, capsize=6, lw=2)
        folds = [f["accuracy"] for f in s["per_fold"]]
        offsets = [0.22 * (i / max(1, len(folds) - 1) - 0.5) for i in range(len(folds))]
        ax.scatter([x + o for o in offsets], folds, s=14, color="black", zorder=3,
                   label="one fold" if x == 0 else None)
        ax.text(x, s["ci_high"] + 0.02, f"{s['accuracy']:.1%}" + ("\nat chance" if s["at_chance"] else ""),
                ha="center", va="bottom", fontsize=9)
    ax.axhline(summary["chance"], color="0.45", lw=1, ls=":", label=f"chance ({summary['chance']:.1%})")
    ax.set_xticks(range(len(models)), [s["display_name"] for s in models.values()], rotation=20, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{summary['folds']}-fold CV: pooled accuracy over {summary['test_images']} images "
                 "(95% Wilson)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
