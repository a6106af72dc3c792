"""The compare stage's data: every evaluated model's outputs read back, and the analysis of them.

`load_results` reads what evaluate wrote (metrics/<id>.json and metrics/<id>_detail.json,
plots/<id>/eval/{report,predictions,robustness}.csv, recipe.json); the pure functions below turn the results into the content of
metrics/compare_detail.json (`summarise`) and metrics/compare.json (`flat_metrics`). Whether a
model is a CNN or a ViT, and whether it is meant to be pretrained, is what evaluate wrote from the
model registry into metrics/<id>_detail.json (`kind`, `meant_pretrained`), never guessed from the id. A model whose `chance_p`
(evaluate's binomial test against the majority-class rate) leaves it at chance is never best,
never in a kind's average, and voids the CNN-vs-ViT verdict when it is its kind's best. Rendering lives in
`vitbench.report.markdown` (compare.md) and `vitbench.report.figures` (figures); the stage that
writes them all is `vitbench.report.compare.compare`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitbench.core import stats
from vitbench.core.config import PHASES
from vitbench.core.errors import DataError
from vitbench.core.fsutil import read_json
from vitbench.core.paths import Paths
from vitbench.evaluate.outputs import DETAIL_KEYS, OPTIONAL_KEYS, REQUIRED_KEYS, read_model_metrics

METRIC_KEYS = REQUIRED_KEYS + DETAIL_KEYS
VOID = "void"                                 # the CNN-vs-ViT winner when a best model is at chance
RESOLVE_POINTS = 0.05                         # the difference sized when the models tie exactly


@dataclass(frozen=True)
class ModelResult:
    """One evaluated model: its metrics, per-class report, per-image predictions, robustness."""

    model_id: str
    metrics: dict[str, Any]
    report: pd.DataFrame        # class, precision, recall, f1, support
    predictions: pd.DataFrame   # path, actual, predicted, confidence, top3
    robustness: pd.DataFrame | None = None   # corruption, severity, accuracy
    recipe: dict[str, Any] | None = None     # record.json's training recipe (vitbench.core.recipe)

    @property
    def name(self) -> str:
        return str(self.metrics.get("display_name") or self.model_id)

    @property
    def kind(self) -> str:
        """CNN or ViT: the `kind` evaluate wrote from the model registry."""
        return str(self.metrics["kind"])

    @property
    def at_chance(self) -> bool:
        """Whether the model is no better than always answering the test split's most frequent
        class (`chance_p` >= ALPHA): a training failure that decides nothing."""
        return stats.at_chance(self.metrics["chance_p"])

    @property
    def majority_rate(self) -> float:
        """The accuracy of always answering the most frequent class of the model's test images."""
        return stats.majority_rate(self.predictions["actual"].astype(str).to_numpy())

    @property
    def meant_pretrained(self) -> bool:
        """Whether the model is meant to start from pretrained weights (the registry's word)."""
        return bool(self.metrics["meant_pretrained"])

    def correct(self, paths: list[str]) -> np.ndarray:
        """Whether the model got each of `paths` right."""
        table = self.predictions.drop_duplicates("path").set_index("path").loc[paths]
        return (table["actual"] == table["predicted"]).to_numpy()


# --- reading ------------------------------------------------------------------------------------

def load_results(paths: Paths, model_ids: tuple[str, ...] | None = None) -> list[ModelResult]:
    """The evaluate outputs of `model_ids` (default: `evaluated_ids`); a missing or malformed file
    is a DataError naming it."""
    return [_load_result(paths, model_id) for model_id in (model_ids or evaluated_ids(paths))]


def evaluated_ids(paths: Paths) -> tuple[str, ...]:
    """The models evaluate wrote results for: every metrics/<id>.json holding the headline numbers
    or metrics/<id>_detail.json naming its own id (one without the other is a DataError naming the
    missing file), by family and then phase: the pipeline's order, read from the files, not from
    model code."""
    found = {p.name.removesuffix(".json") for p in paths.metrics.glob("*.json")
             if not p.name.endswith("_detail.json") and _is_headline(read_json(p))}
    found |= {p.name.removesuffix("_detail.json") for p in paths.metrics.glob("*_detail.json")
              if isinstance(data := read_json(p), dict) and data.get("model") == p.name[:-12]}
    if not found:
        raise DataError(f"no evaluated model in {paths.metrics}: run `dvc repro` (the evaluate "
                        "stages) first")
    order = {}
    for model_id in found:
        detail = read_model_metrics(paths, model_id)   # both files, or a DataError naming one
        if detail.get("phase") not in PHASES:
            raise DataError(f"{paths.detail_json(model_id)} lacks its phase: re-run "
                            f"evaluate@{model_id}")
        order[model_id] = (str(detail.get("family")), PHASES.index(detail["phase"]), model_id)
    return tuple(sorted(found, key=order.__getitem__))


def _is_headline(data: Any) -> bool:
    return isinstance(data, dict) and all(k in data for k in REQUIRED_KEYS)


def _load_result(paths: Paths, model_id: str) -> ModelResult:
    metrics = read_model_metrics(paths, model_id)
    eval_dir = paths.eval_plots(model_id)
    report = _read_csv(eval_dir / "report.csv", ("class", "precision", "recall", "f1", "support"))
    predictions = _read_csv(eval_dir / "predictions.csv",
                            ("path", "actual", "predicted", "confidence"))
    robustness = None
    if "corruption_accuracy" in metrics:
        robustness = _read_csv(eval_dir / "robustness.csv", ("corruption", "severity", "accuracy"))
    recipe_file = eval_dir / "recipe.json"
    recipe = read_json(recipe_file) if recipe_file.is_file() else None
    return ModelResult(model_id, metrics, report, predictions, robustness, recipe)


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

def above_chance(results: list[ModelResult]) -> list[ModelResult]:
    """The models that may decide something: those not at chance, in pipeline order."""
    return [r for r in results if not r.at_chance]


def best(results: list[ModelResult], key: str, higher: bool = True) -> dict[str, Any]:
    """The best value of metric `key` among the models above chance and every model reaching it
    (ties: all, in pipeline order); value None and no models when every model is at chance."""
    eligible = above_chance(results)
    if not eligible:
        return {"value": None, "models": []}
    values = np.array([float(r.metrics[key]) for r in eligible])
    top = values.max() if higher else values.min()
    tied = [r.model_id for r, v in zip(eligible, values) if np.isclose(v, top, rtol=1e-9, atol=1e-12)]
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


def common_paths(results: list[ModelResult]) -> list[str]:
    """Test images every model predicted, in the first model's order."""
    shared = set.intersection(*(set(r.predictions["path"]) for r in results))
    return [p for p in dict.fromkeys(results[0].predictions["path"]) if p in shared]


def paired_test(a: ModelResult, b: ModelResult, images: list[str]) -> dict[str, Any]:
    """McNemar's exact test of `a` against `b` on the shared test `images`, and the number of
    images that would resolve their accuracy difference (or RESOLVE_POINTS when they tie)."""
    test = stats.mcnemar_exact(a.correct(images), b.correct(images))
    n = len(images)
    difference = (test.only_a - test.only_b) / n if n else 0.0
    resolve = abs(difference) if difference else RESOLVE_POINTS
    return {"a": a.model_id, "b": b.model_id, "a_only_right": test.only_a,
            "b_only_right": test.only_b, "p_value": test.p_value,
            "difference": difference, "resolve_points": resolve,
            "images_needed": stats.mcnemar_sample_size((test.only_a + test.only_b) / n, resolve)
            if n else None}


def pairwise_tests(results: list[ModelResult]) -> list[dict[str, Any]]:
    """`paired_test` for every pair of models, in pipeline order."""
    images = common_paths(results)
    return [paired_test(a, b, images) for a, b in itertools.combinations(results, 2)]


def cnn_vs_vit(results: list[ModelResult]) -> dict[str, Any] | None:
    """The best CNN against the best ViT by accuracy, with McNemar's test (None when a kind is
    absent). The winner is the more accurate one when p < ALPHA, else "undecided"; VOID when either
    best model is at chance (`at_chance` lists them): a training failure is no evidence for the
    other kind."""
    cnns = [r for r in results if r.kind == "CNN"]
    vits = [r for r in results if r.kind == "ViT"]
    if not cnns or not vits:
        return None
    cnn = max(cnns, key=lambda r: r.metrics["accuracy"])
    vit = max(vits, key=lambda r: r.metrics["accuracy"])
    test = paired_test(vit, cnn, common_paths(results))
    diff = float(vit.metrics["accuracy"]) - float(cnn.metrics["accuracy"])
    failed = [r.model_id for r in (cnn, vit) if r.at_chance]
    if failed:
        winner = VOID
    elif test["p_value"] < stats.ALPHA and not np.isclose(diff, 0.0, atol=1e-12):
        winner = "ViT" if diff > 0 else "CNN"
    else:
        winner = "undecided"
    return {"best_cnn": cnn.model_id, "best_vit": vit.model_id, "accuracy_difference": diff,
            "vit_only_right": test["a_only_right"], "cnn_only_right": test["b_only_right"],
            "p_value": test["p_value"], "resolve_points": test["resolve_points"],
            "images_needed": test["images_needed"], "at_chance": failed, "winner": winner}


def kind_means(results: list[ModelResult]) -> dict[str, dict[str, Any]]:
    """Per kind (CNN, ViT), over its models above chance (a model at chance has no calibration or
    robustness worth averaging): mean ECE and mean accuracy drop under corruption (points lost),
    None when no model is above chance or one lacks corruption results; `at_chance` counts the
    kind's models left out."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(r.kind for r in results):
        members = [r for r in results if r.kind == kind]
        eligible = above_chance(members)
        drops = [float(r.metrics["accuracy"]) - float(r.metrics["corruption_accuracy"])
                 for r in eligible if "corruption_accuracy" in r.metrics]
        out[kind] = {"ece": float(np.mean([float(r.metrics["ece"]) for r in eligible]))
                       if eligible else None,
                       "corruption_drop": float(np.mean(drops))
                       if eligible and len(drops) == len(eligible) else None,
                       "at_chance": len(members) - len(eligible)}
    return out


def robustness_table(results: list[ModelResult]) -> pd.DataFrame:
    """Accuracy per model (rows: model ids) under each corruption (mean over severities), with the
    clean accuracy first and the mean over all corruptions last; models without results omitted."""
    rows = {}
    for r in results:
        if r.robustness is None:
            continue
        per = r.robustness.groupby("corruption", sort=False)["accuracy"].mean()
        rows[r.model_id] = {"clean": float(r.metrics["accuracy"]), **per.to_dict(),
                            "mean": float(r.metrics["corruption_accuracy"])}
    return pd.DataFrame.from_dict(rows, orient="index")


def find_warnings(results: list[ModelResult], classes: list[str]) -> list[str]:
    """Everything a reader must know before trusting the comparison."""
    warnings = []
    for r in results:
        if r.at_chance:
            warnings.append(
                f"{r.model_id} ({r.name}) is at chance: its accuracy {float(r.metrics['accuracy']):.1%} "
                f"cannot be told apart from always answering the most frequent class "
                f"({r.majority_rate:.1%}; one-sided binomial p = {r.metrics['chance_p']:.2g}). "
                "Its training failed: it is left out of every best, verdict and family average.")
    for r in results:
        if r.meant_pretrained and not r.metrics["pretrained"]:
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
    """The content of metrics/compare_detail.json: everything the report says, as data."""
    versus = cnn_vs_vit(results)
    return {
        "models": {r.model_id: {"display_name": r.name, "at_chance": r.at_chance,
                                **{k: r.metrics[k] for k in METRIC_KEYS + OPTIONAL_KEYS
                                   if k in r.metrics}} for r in results},
        "winner": versus["winner"] if versus else None,
        "models_at_chance": [r.model_id for r in results if r.at_chance],
        "best": {"accuracy": best(results, "accuracy"), "f1_macro": best(results, "f1_macro")},
        "cnn_vs_vit": versus,
        "pairwise": pairwise_tests(results),
        "kinds": kind_means(results),
        "test_images": int(len(results[0].predictions)),
        "perfect_classes": {r.model_id: perfect_classes(r.report) for r in results},
        "unsolved_classes": unsolved_classes(results, classes),
        "warnings": find_warnings(results, classes),
    }


UNROUNDED = ("cnn_vs_vit_p",)   # p-values keep their magnitude (2.8e-09 is not 0)


def flat_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """metrics/compare.json: the four numbers of the CNN-vs-ViT question that `dvc metrics show`
    and `dvc exp show` put beside the models' (numbers only, a key without a value left out: the
    worded winner, the bests and the warnings are compare_detail.json's)."""
    versus = summary["cnn_vs_vit"] or {}
    flat = {
        "test_images": summary["test_images"],
        "vit_minus_cnn": versus.get("accuracy_difference"),
        "cnn_vs_vit_p": versus.get("p_value"),
        "models_at_chance": len(summary["models_at_chance"]),
    }
    return {k: (round(v, 6) if isinstance(v, float) and k not in UNROUNDED else v)
            for k, v in flat.items() if v is not None}
