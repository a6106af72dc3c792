"""The sweep curve of `vitbench summarize --by PARAM`: accuracy against the param, one line per
model with its 95% interval as a band; CNNs solid in blues, ViTs dashed in oranges. For a cost
param (train.epochs) a second panel draws accuracy against the mean training seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitbench.plots.common import plt, save_figure

STYLE = {"CNN": ("Blues", "-", "o"), "ViT": ("Oranges", "--", "s")}
COST_KEYS = ("train.epochs",)   # also drawn against the training seconds
TITLES = {"split.max_train_per_class": "training images per class", "train.epochs": "training epochs",
          "cnn.image_size": "CNN input size (px)", "vit.image_size": "ViT input size (px)",
          "vit_ft.image_size": "pretrained ViT input size (px)"}
LOG_RATIO = 8.0   # a log x axis when the values span this factor or more (training sizes do)


def _colors(kind: str, count: int) -> list[Any]:
    cmap = plt.get_cmap(STYLE.get(kind, ("Greys",))[0])
    return [cmap(0.55 + 0.4 * i / max(1, count - 1)) for i in range(count)]


def draw_sweep(summary: dict[str, Any], path: Path, cost: bool = False) -> Path:
    """Write the curve PNG for `vitbench.experiments.sweep_summary.summarize_by`'s summary."""
    by = summary["by"]
    panels = 2 if cost else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 4.4), squeeze=False)
    kinds = {k: [m for m, s in summary["models"].items() if s["kind"] == k]
             for k in dict.fromkeys(s["kind"] for s in summary["models"].values())}
    xs = [p["x"] for s in summary["models"].values() for p in s["points"]]
    log = min(xs) > 0 and max(xs) / min(xs) >= LOG_RATIO
    for kind, members in kinds.items():
        for model_id, color in zip(members, _colors(kind, len(members))):
            s = summary["models"][model_id]
            _line(axes[0][0], s, [p["x"] for p in s["points"]], color, kind)
            if cost:
                _line(axes[0][1], s, [p["train_seconds"] for p in s["points"]], color, kind)
    ax = axes[0][0]
    if log:
        ax.set_xscale("log")
    ticks = {p["x"]: p["label"] for s in summary["models"].values() for p in s["points"]}
    ax.set_xticks(list(ticks), [_tick(t, by) for t in ticks.values()])
    ax.minorticks_off()
    name = TITLES.get(by, by)
    ax.set_xlabel(f"{name} ({by}{', log scale' if log else ''})")
    ax.set_title(f"Test accuracy against {name}")
    if cost:
        axes[0][1].set_xlabel("mean training time (s)")
        axes[0][1].set_title("Test accuracy against training cost")
    kinds_text = ", ".join(sorted({p["ci_kind"] for s in summary["models"].values()
                                   for p in s["points"] if p["ci_kind"] != "none"}))
    chance = summary.get("chance")
    for a in axes[0]:
        a.set_ylabel("test accuracy")
        a.set_ylim(0, 1)
        a.grid(alpha=0.3)
        if chance:
            a.axhline(chance, color="0.45", lw=1, ls=":", label=f"chance (1/{round(1 / chance)})")
    fig.tight_layout()
    # the legend below the axes: inside, it hides the points and bands it names
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, fontsize=8, loc="upper left", ncol=2, frameon=False,
                        bbox_to_anchor=(0.0, 0.0), bbox_transform=fig.transFigure)
    seeds = summary["seeds"]
    sentence = summary["crossover"]["sentence"]
    fig.canvas.draw()
    below = legend.get_window_extent().transformed(fig.transFigure.inverted()).y0
    fig.text(0.01, below - 0.02, f"Mean over {len(seeds)} seed(s) per point; band: 95% interval "
             f"({kinds_text or 'none'}). CNNs solid, ViTs dashed. {sentence[0].upper()}{sentence[1:]}",
             fontsize=8, wrap=True, ha="left", va="top")
    return save_figure(fig, path)


def _line(ax: Any, s: dict[str, Any], xs: list[Any], color: Any, kind: str) -> None:
    pts = [(x, p) for x, p in zip(xs, s["points"]) if x is not None]
    if not pts:
        return
    _, style, marker = STYLE.get(kind, ("Greys", ":", "^"))
    x = [a for a, _ in pts]
    ax.plot(x, [p["mean"] for _, p in pts], style, marker=marker, color=color, lw=2,
            label=f"{s['display_name']} ({kind})".replace("$", r"\$"))   # a name, not mathtext
    band = [(a, p) for a, p in pts if p["ci_low"] is not None]
    if band:   # faint fill, its edges thin in the line's style: overlapping bands stay traceable
        bx, low, high = [a for a, _ in band], [p["ci_low"] for _, p in band], [p["ci_high"] for _, p in band]
        ax.fill_between(bx, low, high, color=color, alpha=0.08, lw=0)
        for edge in (low, high):
            ax.plot(bx, edge, style, color=color, lw=0.8, alpha=0.6)


def _tick(text: str, by: str) -> str:
    """The value alone on the axis ("25", "all\n(~93)")."""
    if text.startswith("all images"):
        return "all" + (f"\n{text[len('all images '):].replace(' per class', '')}" if "~" in text else "")
    return text.split(" ")[0]


def sweep_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The CSV rows `dvc plots show` draws: one per value (x, value), per model its mean accuracy
    (column = model id) and interval (<id>_low, <id>_high), runs (<id>_n), train seconds."""
    rows: dict[float, dict[str, Any]] = {}
    for model_id, s in summary["models"].items():
        for p in s["points"]:
            row = rows.setdefault(p["x"], {"x": p["x"], summary["by"]: "all" if p["value"] is None else p["value"]})
            row.update({model_id: p["mean"], f"{model_id}_low": p["ci_low"], f"{model_id}_high": p["ci_high"],
                        f"{model_id}_n": p["n"], f"{model_id}_train_seconds": p["train_seconds"]})
    return [rows[x] for x in sorted(rows)]


def write_sweep(summary: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """plots/sweep/<PARAM>.png (the curve; with a cost panel for train.epochs) and
    plots/sweep/<PARAM>.csv (`dvc plots show plots/sweep/<PARAM>.csv -x x -y <model id>`)."""
    import pandas as pd

    from vitbench.core.fsutil import atomic_file

    folder.mkdir(parents=True, exist_ok=True)
    png = draw_sweep(summary, folder / f"{summary['by']}.png", cost=summary["by"] in COST_KEYS)
    csv = folder / f"{summary['by']}.csv"
    with atomic_file(csv) as fh:
        pd.DataFrame(sweep_table(summary)).to_csv(fh, index=False)
    return png, csv
