"""The compare stage: every evaluated model side by side -> metrics/compare.{json,md},
metrics/compare_detail.json and plots/compare/.

Reads only the evaluate stage's outputs (metrics/<id>.json, metrics/<id>_detail.json,
plots/<id>/eval/{report,predictions,robustness}.csv and recipe.json) and the test images the
predictions grid shows. `metrics/compare.json` is the DVC metric: four numbers
(`results.flat_metrics`); the per-model detail, the worded winner, the paired tests and the
warnings go to `metrics/compare_detail.json`.

The verdict is statistical: all models are evaluated on the same test images, so every pair is
compared with McNemar's exact test (`vitbench.core.stats`), and the CNN-vs-ViT conclusion says
"better" only when p < 0.05; otherwise it says how many test images would resolve the observed
difference.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from vitbench.core.config import Compare
from vitbench.data.manifest import read_labels
from vitbench.core.errors import DataError
from vitbench.core.fsutil import atomic_dir, atomic_file, write_json
from vitbench.core.paths import Paths
from vitbench.report.markdown import AT_CHANCE, render_markdown
from vitbench.report.results import (ModelResult, common_paths, flat_metrics, load_results, per_class_f1,
                              summarise)

if TYPE_CHECKING:
    from vitbench.report.figures import GridSample

log = logging.getLogger(__name__)

GRID_IMAGE_SIDE = 256   # predictions grid thumbnails (pixels, longest side)
__all__ = ["compare", "grid_samples", "load_results", "summarise"]


# --- the stage ----------------------------------------------------------------------------------

def compare(cfg: Compare, seed: int, paths: Paths) -> dict[str, Any]:
    """Write metrics/compare.json (flat), metrics/compare_detail.json, metrics/compare.md and
    plots/compare/*.png; return the detailed summary. `seed` picks the predictions grid's images."""
    results = load_results(paths)
    classes = read_labels(paths.labels)
    summary = summarise(results, classes)
    samples = grid_samples(results, paths, cfg.samples, seed)
    _write_plots(paths.compare_plots, results, classes, samples)
    with atomic_file(paths.metrics / "compare.md") as fh:
        fh.write(render_markdown(summary, results, classes))
    write_json(paths.metrics_json("compare_detail"), summary)
    write_json(paths.metrics_json("compare"), flat_metrics(summary))
    for warning in summary["warnings"]:
        log.warning("%s", warning)
    top = summary["best"]["accuracy"]
    if top["models"]:
        log.info("best accuracy: %s (%.4f)", ", ".join(top["models"]), top["value"])
    log.info("CNN or ViT: %s", summary["winner"])
    return summary


def grid_samples(results: list[ModelResult], paths: Paths, count: int, seed: int) -> list[GridSample]:
    """`count` test images (fixed by `seed`) with every model's prediction, for the grid figure."""
    from vitbench.report.figures import GridSample

    common = common_paths(results)
    if not common:
        raise DataError("the models' predictions.csv share no test image: re-run `dvc repro`")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(common), min(count, len(common)), replace=False))
    tables = [r.predictions.drop_duplicates("path").set_index("path") for r in results]
    samples = []
    for i in chosen:
        path = common[i]
        preds = [(r.name, str(t.at[path, "predicted"]), float(t.at[path, "confidence"]))
                 for r, t in zip(results, tables)]
        samples.append(GridSample(_thumbnail(paths.root / path), str(tables[0].at[path, "actual"]),
                                  preds))
    return samples


def _thumbnail(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"test image {path} (from predictions.csv) not found: re-run `dvc repro`")
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((GRID_IMAGE_SIDE, GRID_IMAGE_SIDE))
        return np.asarray(img)


def _write_plots(target: Path, results: list[ModelResult], classes: list[str],
                 samples: list[GridSample]) -> None:
    from vitbench.report import figures as figures

    names = {r.model_id: r.name + (f" ({AT_CHANCE})" if r.at_chance else "") for r in results}
    rows = [{**r.metrics, "model": names[r.model_id], "kind": r.kind} for r in results]
    f1 = per_class_f1(results, classes).rename(columns=names)
    curves = [{"model": names[r.model_id], "kind": r.kind, "clean": float(r.metrics["accuracy"]),
               "table": r.robustness} for r in results if r.robustness is not None]
    with atomic_dir(target) as tmp:
        figures.save_accuracy_loss(rows, tmp / "accuracy_loss.png")
        figures.save_size_vs_accuracy(rows, tmp / "size_vs_accuracy.png")
        figures.save_per_class_f1(f1, tmp / "per_class_f1.png")
        figures.save_predictions_grid(samples, tmp / "predictions_grid.png")
        if curves:
            figures.save_robustness(curves, tmp / "robustness.png")
