"""The compare stage: every evaluated model side by side -> metrics/compare.{json,md}, plots/compare/.

Reads only the evaluate stage's outputs (metrics/<id>.json, plots/<id>/eval/{report,predictions}.csv)
and the test images the predictions grid shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from vitbench.config import MODEL_IDS, Params
from vitbench.data.manifest import read_labels
from vitbench.errors import DataError
from vitbench.fsutil import atomic_dir, atomic_file, read_json, write_json
from vitbench.paths import Paths

if TYPE_CHECKING:
    from vitbench.plots.compare import GridSample

log = logging.getLogger(__name__)

MEANT_PRETRAINED = ("cnn_transfer", "cnn_finetuned", "vit_transfer", "vit_finetuned")
METRIC_KEYS = ("accuracy", "loss", "top5_accuracy", "precision_macro", "recall_macro", "f1_macro",
               "f1_weighted", "params_total", "params_trainable", "size_mb", "train_seconds",
               "epochs_run", "infer_images_per_second", "pretrained")
GRID_IMAGE_SIDE = 256   # predictions grid thumbnails (pixels, longest side)


@dataclass(frozen=True)
class ModelResult:
    """One evaluated model: its metrics, per-class report and per-image predictions."""

    model_id: str
    metrics: dict[str, Any]
    report: pd.DataFrame        # class, precision, recall, f1, support
    predictions: pd.DataFrame   # path, actual, predicted, confidence, top3

    @property
    def name(self) -> str:
        return str(self.metrics.get("display_name") or self.model_id)

    @property
    def family(self) -> str:
        return "CNN" if self.model_id.startswith("cnn") else "ViT"


# --- reading ------------------------------------------------------------------------------------

def load_results(paths: Paths, model_ids: tuple[str, ...] = MODEL_IDS) -> list[ModelResult]:
    """The evaluate outputs of every model; a missing or malformed file is a DataError naming it."""
    return [_load_result(paths, model_id) for model_id in model_ids]


def _load_result(paths: Paths, model_id: str) -> ModelResult:
    metrics_file = paths.metrics_json(model_id)
    if not metrics_file.is_file():
        raise DataError(f"{metrics_file} not found: run `dvc repro evaluate@{model_id}` first")
    metrics = read_json(metrics_file)
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise DataError(f"{metrics_file} lacks key(s) {', '.join(missing)}: re-run evaluate@{model_id}")
    eval_dir = paths.eval_plots(model_id)
    report = _read_csv(eval_dir / "report.csv", ("class", "precision", "recall", "f1", "support"))
    predictions = _read_csv(eval_dir / "predictions.csv",
                            ("path", "actual", "predicted", "confidence"))
    return ModelResult(model_id, metrics, report, predictions)


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found: run the evaluate stage that writes it")
    df = pd.read_csv(path, dtype={"class": str, "actual": str, "predicted": str},
                     keep_default_na=False)  # a class called NA stays "NA"
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}")
    return df


# --- analysis (pure) ----------------------------------------------------------------------------

def best(results: list[ModelResult], key: str, higher: bool = True) -> dict[str, Any]:
    """The best value of metric `key` and every model reaching it (ties: all, in pipeline order)."""
    values = np.array([float(r.metrics[key]) for r in results])
    top = values.max() if higher else values.min()
    tied = [r.model_id for r, v in zip(results, values) if np.isclose(v, top, rtol=1e-9, atol=1e-12)]
    return {"value": float(top), "models": tied}


def perfect_classes(report: pd.DataFrame) -> list[str]:
    """Classes a model gets perfectly right: precision = recall = 1 (the cartoon study's count)."""
    perfect = (report["precision"] >= 1.0) & (report["recall"] >= 1.0) & (report["support"] > 0)
    return [str(c) for c in report.loc[perfect, "class"]]


def unsolved_classes(results: list[ModelResult], classes: list[str]) -> list[str]:
    """Classes of which no model classifies a single test image correctly (recall 0 everywhere)."""
    solved = set()
    for r in results:
        solved |= set(r.report.loc[r.report["recall"] > 0, "class"].astype(str))
    return [c for c in classes if c not in solved]


def per_class_f1(results: list[ModelResult], classes: list[str]) -> pd.DataFrame:
    """F1 per class (rows, in label order) and model (columns: model ids)."""
    table = pd.DataFrame(index=pd.Index(classes, name="class"))
    for r in results:
        table[r.model_id] = r.report.set_index("class")["f1"].reindex(classes).astype(float)
    return table


def cnn_vs_vit(results: list[ModelResult]) -> dict[str, Any] | None:
    """The best CNN against the best ViT by accuracy (None when one family is absent)."""
    cnns = [r for r in results if r.family == "CNN"]
    vits = [r for r in results if r.family == "ViT"]
    if not cnns or not vits:
        return None
    cnn = max(cnns, key=lambda r: r.metrics["accuracy"])
    vit = max(vits, key=lambda r: r.metrics["accuracy"])
    diff = float(vit.metrics["accuracy"]) - float(cnn.metrics["accuracy"])
    winner = "tie" if np.isclose(diff, 0.0, atol=1e-12) else ("ViT" if diff > 0 else "CNN")
    return {"best_cnn": cnn.model_id, "best_vit": vit.model_id,
            "accuracy_difference": diff, "winner": winner}


def find_warnings(results: list[ModelResult], classes: list[str]) -> list[str]:
    """Everything a reader must know before trusting the comparison."""
    warnings = []
    for r in results:
        if r.model_id in MEANT_PRETRAINED and not r.metrics["pretrained"]:
            warnings.append(
                f"{r.model_id} ({r.name}) is meant to start from pretrained ImageNet weights but "
                "was trained from RANDOM weights (pretrained: false; the weights were not available). "
                "Its score says nothing about transfer learning.")
    for c in unsolved_classes(results, classes):
        warnings.append(f"No model classified a single test image of class '{c}' correctly.")
    reference = set(results[0].predictions["path"])
    for r in results[1:]:
        if set(r.predictions["path"]) != reference:
            warnings.append(f"{r.model_id} was evaluated on different test images than "
                            f"{results[0].model_id}: re-run `dvc repro` so all use the same split.")
    for r in results:
        extra = sorted(set(r.report["class"].astype(str)) - set(classes))
        if extra:
            warnings.append(f"{r.model_id}'s report has class(es) {', '.join(extra)} that are not "
                            "in data/split/labels.json: re-run its evaluate stage.")
    return warnings


def summarise(results: list[ModelResult], classes: list[str]) -> dict[str, Any]:
    """The content of metrics/compare.json."""
    return {
        "models": {r.model_id: {"display_name": r.name, "family": r.family,
                                **{k: r.metrics[k] for k in METRIC_KEYS}} for r in results},
        "best": {"accuracy": best(results, "accuracy"), "f1_macro": best(results, "f1_macro")},
        "cnn_vs_vit": cnn_vs_vit(results),
        "test_images": int(len(results[0].predictions)),
        "perfect_classes": {r.model_id: perfect_classes(r.report) for r in results},
        "unsolved_classes": unsolved_classes(results, classes),
        "warnings": find_warnings(results, classes),
    }


# --- the markdown report -----------------------------------------------------------------------

# (header, metric key, formatter, which value is best: "max", "min" or None)
TABLE_COLUMNS: tuple[tuple[str, str, Any, str | None], ...] = (
    ("Params", "params_total", lambda v: _fmt_count(v), "min"),
    ("Size (MB)", "size_mb", lambda v: f"{v:.1f}", "min"),
    ("Train time", "train_seconds", lambda v: _fmt_seconds(v), "min"),
    ("Images/s", "infer_images_per_second", lambda v: f"{v:.1f}", "max"),
    ("Accuracy", "accuracy", lambda v: f"{v:.1%}", "max"),
    ("Loss", "loss", lambda v: f"{v:.3f}", "min"),
    ("Macro F1", "f1_macro", lambda v: f"{v:.3f}", "max"),
)


def render_markdown(summary: dict[str, Any], results: list[ModelResult], classes: list[str]) -> str:
    """metrics/compare.md: warnings, conclusion, the side-by-side table and per-class F1."""
    lines = ["# CNN or Vision Transformer? The comparison", ""]
    if summary["warnings"]:
        lines += [f"> **WARNING:** {w}" + "  " for w in summary["warnings"]] + [""]
    lines += ["## Conclusion", "", *conclusion(summary, results, classes), ""]
    lines += [f"## All models on the test split ({summary['test_images']} images)", "",
              *_models_table(results), "",
              "Best value per column in **bold**. Size is the model folder on disk; images/s is "
              "inference alone on one in-memory batch.", ""]
    lines += ["## F1 per class", "", *_per_class_table(results, classes), ""]
    return "\n".join(lines)


def conclusion(summary: dict[str, Any], results: list[ModelResult], classes: list[str]) -> list[str]:
    """A short data-driven verdict: who wins, by how much, at what cost; perfect and hard classes."""
    by_id = {r.model_id: r for r in results}
    out = [_winner_sentence(summary["best"]["accuracy"], results, "accuracy")]
    if summary["best"]["f1_macro"]["models"] != summary["best"]["accuracy"]["models"]:
        out.append(_winner_sentence(summary["best"]["f1_macro"], results, "f1_macro"))
    versus = summary["cnn_vs_vit"]
    if versus:
        cnn, vit = by_id[versus["best_cnn"]], by_id[versus["best_vit"]]
        points = abs(versus["accuracy_difference"]) * 100
        verdict = ("a tie" if versus["winner"] == "tie"
                   else f"the **{versus['winner']}** wins by {points:.1f} accuracy points")
        out.append(f"- **CNN or ViT?** Best CNN {cnn.name} ({cnn.metrics['accuracy']:.1%}) against "
                   f"best ViT {vit.name} ({vit.metrics['accuracy']:.1%}): {verdict}.")
    perfect = [f"{by_id[m].name} {len(c)}/{len(classes)}"
               for m, c in summary["perfect_classes"].items()]
    out.append("- Classes with a perfect score (precision = recall = 1): " + ", ".join(perfect) + ".")
    out.append(_hardest_class_sentence(summary["unsolved_classes"], per_class_f1(results, classes)))
    return out


def _winner_sentence(top: dict[str, Any], results: list[ModelResult], key: str) -> str:
    label = {"accuracy": "accuracy", "f1_macro": "macro F1"}[key]
    fmt = (lambda v: f"{v:.1%}") if key == "accuracy" else (lambda v: f"{v:.3f}")
    winners = [r for r in results if r.model_id in top["models"]]
    others = sorted((r for r in results if r.model_id not in top["models"]),
                    key=lambda r: -float(r.metrics[key]))
    names = " and ".join(f"**{r.name}**" for r in winners)
    if not others:
        return (f"- Best {label}: all models tie at {fmt(top['value'])}. "
                + _cheapest_sentence(winners))
    runner = others[0]
    gap = top["value"] - float(runner.metrics[key])
    gap_text = f"{gap * 100:.1f} points" if key == "accuracy" else f"{gap:.3f}"
    tie = " (a tie)" if len(winners) > 1 else ""
    sentence = (f"- Best {label}: {names}{tie} with {fmt(top['value'])}, {gap_text} ahead of the "
                f"runner-up {runner.name} ({fmt(float(runner.metrics[key]))}).")
    if key == "accuracy":
        sentence += " " + _cost_sentence(winners[0], runner)
        if len(winners) > 1:
            sentence += " " + _cheapest_sentence(winners)
    return sentence


def _cost_sentence(winner: ModelResult, runner: ModelResult) -> str:
    """What the winner costs against the runner-up: size and inference speed."""
    w, r = winner.metrics, runner.metrics
    size = _ratio(w["size_mb"], r["size_mb"], ("larger", "smaller", "as large"))
    speed = _ratio(w["infer_images_per_second"], r["infer_images_per_second"],
                   ("faster", "slower", "as fast"))
    return (f"The price: it is {size} ({w['size_mb']:.1f} MB against {r['size_mb']:.1f} MB) and "
            f"{speed} ({w['infer_images_per_second']:.1f} against "
            f"{r['infer_images_per_second']:.1f} images/s).")


def _cheapest_sentence(tied: list[ModelResult]) -> str:
    """Among equally accurate models, name the smallest and the fastest."""
    small = min(tied, key=lambda r: float(r.metrics["size_mb"]))
    fast = max(tied, key=lambda r: float(r.metrics["infer_images_per_second"]))
    size = f"{small.metrics['size_mb']:.1f} MB"
    speed = f"{fast.metrics['infer_images_per_second']:.1f} images/s"
    if small is fast:
        return f"The cheapest of them: {small.name}, both the smallest ({size}) and the fastest ({speed})."
    return (f"The cheapest of them: {small.name} is the smallest ({size}), "
            f"{fast.name} the fastest ({speed}).")


def _ratio(a: float, b: float, words: tuple[str, str, str]) -> str:
    """`a` against `b` in words, e.g. "3.2x larger", "2x slower", "about as fast"."""
    more, less, same = words
    a, b = float(a), float(b)
    if a <= 0 or b <= 0:
        return f"not measurably {more} or {less}"
    if np.isclose(a, b, rtol=0.05):
        return f"about {same}"
    return f"{a / b:.2g}x {more}" if a > b else f"{b / a:.2g}x {less}"


def _hardest_class_sentence(unsolved: list[str], f1: pd.DataFrame) -> str:
    if unsolved:
        return ("- **No model got a single test image right** of class(es): "
                + ", ".join(unsolved) + ". Check their labels and training images.")
    mean_f1 = f1.mean(axis=1, skipna=True).dropna()
    if mean_f1.empty:
        return "- No per-class scores to compare."
    hardest = str(mean_f1.idxmin())
    if mean_f1[hardest] >= 1.0:
        return "- Every model recognises every class perfectly on this test split."
    return f"- Hardest class: {hardest} (mean F1 over the models {mean_f1[hardest]:.3f})."


def _models_table(results: list[ModelResult]) -> list[str]:
    header = ["Model", "Pretrained", *(c[0] for c in TABLE_COLUMNS)]
    rows = [[r.name, _pretrained_cell(r)] for r in results]
    for _, key, fmt, better in TABLE_COLUMNS:
        values = [r.metrics[key] for r in results]
        marks = _best_marks(values, better)
        for row, value, mark in zip(rows, values, marks):
            row.append(_bold(fmt(value), mark))
    return _md_table(header, rows)


def _pretrained_cell(r: ModelResult) -> str:
    if r.metrics["pretrained"]:
        return "yes"
    return "**NO: random init!**" if r.model_id in MEANT_PRETRAINED else "no (by design)"


def _per_class_table(results: list[ModelResult], classes: list[str]) -> list[str]:
    f1 = per_class_f1(results, classes)
    rows = []
    for c, row in f1.iterrows():
        values = [None if pd.isna(v) else float(v) for v in row]
        differ = len({v for v in values if v is not None}) > 1
        marks = _best_marks(values, "max") if differ else [False] * len(values)
        rows.append([str(c)] + [_bold("-" if v is None else f"{v:.3f}", m)
                                for v, m in zip(values, marks)])
    return _md_table(["Class", *(r.name for r in results)], rows)


def _best_marks(values: list[Any], better: str | None) -> list[bool]:
    numbers = [v for v in values if v is not None and better is not None]
    if not numbers:
        return [False] * len(values)
    top = max(numbers) if better == "max" else min(numbers)
    return [v is not None and bool(np.isclose(float(v), top, rtol=1e-9, atol=1e-12)) for v in values]


def _bold(text: str, mark: bool) -> str:
    return f"**{text}**" if mark and not text.startswith("**") else text


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["--:"] * (len(header) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (header, align, *rows)]


def _fmt_count(n: float) -> str:
    n = float(n)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {suffix}"
    return f"{n:.0f}"


def _fmt_seconds(s: float) -> str:
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


# --- the stage ----------------------------------------------------------------------------------

def compare(params: Params, paths: Paths) -> dict[str, Any]:
    """Write metrics/compare.json, metrics/compare.md and plots/compare/*.png; return the summary."""
    results = load_results(paths)
    classes = read_labels(paths.labels)
    summary = summarise(results, classes)
    samples = grid_samples(results, paths, params.compare.samples, params.seed)
    _write_plots(paths.compare_plots, results, classes, samples)
    with atomic_file(paths.metrics / "compare.md") as fh:
        fh.write(render_markdown(summary, results, classes))
    write_json(paths.metrics_json("compare"), summary)
    for warning in summary["warnings"]:
        log.warning("%s", warning)
    log.info("best accuracy: %s (%.4f)", ", ".join(summary["best"]["accuracy"]["models"]),
             summary["best"]["accuracy"]["value"])
    return summary


def grid_samples(results: list[ModelResult], paths: Paths, count: int, seed: int) -> list[GridSample]:
    """`count` test images (fixed by `seed`) with every model's prediction, for the grid figure."""
    from vitbench.plots.compare import GridSample

    common = _common_paths(results)
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


def _common_paths(results: list[ModelResult]) -> list[str]:
    """Test images every model predicted, in the first model's order."""
    shared = set.intersection(*(set(r.predictions["path"]) for r in results))
    return [p for p in dict.fromkeys(results[0].predictions["path"]) if p in shared]


def _thumbnail(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"test image {path} (from predictions.csv) not found: re-run `dvc repro`")
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((GRID_IMAGE_SIDE, GRID_IMAGE_SIDE))
        return np.asarray(img)


def _write_plots(target: Path, results: list[ModelResult], classes: list[str],
                 samples: list[GridSample]) -> None:
    from vitbench.plots import compare as figures

    rows = [{**r.metrics, "model": r.name, "family": r.family} for r in results]
    f1 = per_class_f1(results, classes).rename(columns={r.model_id: r.name for r in results})
    with atomic_dir(target) as tmp:
        figures.save_accuracy_loss(rows, tmp / "accuracy_loss.png")
        figures.save_size_vs_accuracy(rows, tmp / "size_vs_accuracy.png")
        figures.save_per_class_f1(f1, tmp / "per_class_f1.png")
        figures.save_predictions_grid(samples, tmp / "predictions_grid.png")
