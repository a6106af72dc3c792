"""`vitbench cv`: k-fold cross-validation of the comparison as DVC experiments, and its summary.

`run_cv` queues one experiment per fold (and seed) through the queue `vitbench sweep` uses
(`-S split.folds=K -S split.fold=i -S seed=s`, names such as `folds-5-fold-0-seed-42`; extra
`-S key=value` settings apply to every fold and prefix the names), checks every experiment's
params before the first is queued, starts the queue, waits with progress and writes the summary.

The summary pools every model's test predictions over the folds (plots/<id>/eval/predictions.csv
of each experiment): within one seed each cleaned image is tested exactly once, so the pooled
accuracy is over every image, with its Wilson interval, and McNemar's exact test pairs two
models' predictions image by image over all of them. Beside it, the corrected resampled t-test
over the fold differences (Nadeau and Bengio 2003, "Inference for the generalization error",
Machine Learning 52:239-281):

    t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)),  df = J - 1

over the J = folds x seeds accuracy differences d (the correction accounts for the overlap of
the training sets between folds). A model whose pooled accuracy is not above the majority-class
rate of the pooled test images (`stats.chance_p`, `stats.at_chance`) is marked and never wins;
if the best model of a kind is at chance there is no verdict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scistats

from vitbench.core import config, stats
from vitbench.core.errors import DataError, VitbenchError
from vitbench.experiments.queue import exp_show, predictions_at, start_queue, wait_for_queue
from vitbench.models import registry
from vitbench.experiments.sweep import Point, Progress, parse_grid, plan, queue_points
from vitbench.experiments.sweep_summary import SweepRun, kind_of, line_name, model_of, sweep_runs

FOLDS_KEY, FOLD_KEY = "split.folds", "split.fold"
SUMMARY_DIR = Path("plots") / "cv"
# what the verdict's "like for like" sentence compares (metrics/<id>.json and _detail.json)
FOOTING_KEYS = ("image_size", "pretrained", "steps_run", "epochs_run", "train_seconds", "params_total")


def plan_cv(folds: int, root: Path, specs: Sequence[str] = (), seeds: int | None = None) -> list[Point]:
    """One experiment per fold and seed (seeds 1..`seeds`, default the params.yaml seed), with
    `specs` (`key=value`, one value each) set in all of them; every one's params checked."""
    if folds < 2:
        raise VitbenchError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if seeds is not None and seeds < 1:
        raise VitbenchError(f"--seeds {seeds}: need at least 1")
    raw = config.read_params(root / config.PARAMS_FILE)
    grid = parse_grid(specs, raw) if specs else {}
    for key, values in grid.items():
        if key in (FOLDS_KEY, FOLD_KEY):
            raise VitbenchError(f"-S {key}: set by vitbench cv itself (--folds K runs folds 0..K-1)")
        if len(values) > 1:
            raise VitbenchError(f"-S {key}: vitbench cv takes one value per key (it applies to every "
                                "fold); to compare values, run vitbench cv once per value")
    grid[FOLDS_KEY] = [(str(folds), folds)]
    grid[FOLD_KEY] = [(str(i), i) for i in range(folds)]
    chosen = list(range(1, seeds + 1)) if seeds is not None else [int(raw["seed"])]
    return plan(grid, chosen, raw)


def run_cv(folds: int, root: Path, models: Sequence[str] = (), specs: Sequence[str] = (),
           seeds: int | None = None, jobs: int = 1, start: bool = True, wait: bool = True,
           timeout: float = 7 * 24 * 3600,
           echo: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Queue the folds' experiments and (with `start`) run them; with `wait`, block until they
    finish and write the summary (returned)."""
    points = plan_cv(folds, root, specs, seeds)
    check_workspace_folds(folds, root, specs)
    tasks = queue_points(points, root, models)
    echo(f"queued {len(points)} experiment(s): {', '.join(p.name for p in points)}")
    if not (start and wait):
        if start:
            start_queue(root, jobs)
        return None
    start_queue(root, jobs)
    wait_for_queue(root, timeout, tasks, Progress(jobs, echo), jobs=jobs, echo=echo)
    return summarize_project(root, folds, specs, seeds)


def check_workspace_folds(folds: int, root: Path, specs: Sequence[str] = ()) -> None:
    """Refuse, before queueing, more folds than a class of the workspace's data/clean has
    near-duplicate groups (the split stage of every fold would refuse them). Skipped when there is
    no data/clean or the experiments' cleaned images may differ from it: a drawn (seeded) demo
    dataset, or -S settings of the dataset, clean or split sections."""
    from vitbench.data.splitting import check_folds_of_manifest
    from vitbench.core.paths import Paths

    manifest = Paths(root).clean_manifest
    params = registry.load_params(root / config.PARAMS_FILE)
    touched = any(spec.split("=", 1)[0].strip().split(".")[0] in ("dataset", "clean", "split")
                  for spec in specs)
    if not manifest.is_file() or touched or params.dataset.kind == "synthetic":
        return
    try:
        check_folds_of_manifest(manifest, params.split, folds)
    except DataError as exc:
        raise VitbenchError(f"{manifest}: {exc}; nothing was queued") from None


def summarize_project(root: Path, folds: int, specs: Sequence[str] = (),
                      seeds: int | None = None) -> dict[str, Any]:
    """The summary of the finished experiments `plan_cv(folds, ...)` names, written to
    plots/cv/summary.{json,md,png}."""
    from vitbench.experiments.cv_figure import draw_cv

    points = plan_cv(folds, root, specs, seeds)
    names = {p.name for p in points}
    show = exp_show(root)
    first = next(iter(names))
    prefix = first[:first.rindex("-fold-") + len("-fold-")]   # <settings>-folds-K-fold-
    runs = [r for r in sweep_runs(show, FOLD_KEY, prefix, root) if r.name in names]
    missing = sorted(names - {r.name for r in runs})
    if missing:
        raise VitbenchError(f"{len(missing)} of the {len(names)} fold experiment(s) have not finished "
                            f"(or failed): {', '.join(missing[:6])}; see `dvc queue status`, "
                            "`dvc queue logs NAME`")
    summary = summarize(runs, root)
    folder = root / SUMMARY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    from vitbench.core.fsutil import atomic_file, write_json

    write_json(folder / "summary.json", summary)
    with atomic_file(folder / "summary.md", "w") as fh:
        fh.write(render(summary))
    draw_cv(summary, folder / "summary.png")
    return summary


def fold_predictions(root: Path, rev: str, model_id: str) -> pd.DataFrame:
    """plots/<id>/eval/predictions.csv of the experiment at commit `rev` (path, actual,
    predicted), one row per image."""
    return predictions_at(root, rev, model_id).reset_index()[["path", "actual", "predicted"]]


def pooled(runs: list[SweepRun], root: Path) -> dict[str, pd.DataFrame]:
    """{model line: every test prediction of every fold (seed, fold, path, actual, correct,
    train: the fold's training images)}; DataError-like refusal if an image is tested twice in
    one seed (the folds would not partition the images)."""
    frames: dict[str, list[pd.DataFrame]] = {}
    for run in runs:
        train = run.train_per_class * run.classes if run.train_per_class and run.classes else None
        for line in run.metrics:
            df = fold_predictions(root, run.rev, model_of(line))
            frames.setdefault(line, []).append(df.assign(
                seed=run.seed, fold=int(run.value), correct=df["actual"] == df["predicted"],
                train=train))
    out = {}
    for line, parts in frames.items():
        df = pd.concat(parts, ignore_index=True)
        twice = df[df.duplicated(["seed", "path"], keep=False)]
        if len(twice):
            row = twice.iloc[0]
            raise VitbenchError(f"{line}: image {row['path']} is tested in more than one fold of "
                                f"seed {row['seed']}: these experiments are not one cross-validation")
        out[line] = df
    return out


def summarize(runs: list[SweepRun], root: Path) -> dict[str, Any]:
    """The cross-validation summary as data (plots/cv/summary.json)."""
    if not runs:
        raise VitbenchError("no finished fold experiment: run `vitbench cv --folds K` first")
    predictions = pooled(runs, root)
    folds = int(runs[0].params["split"]["folds"])
    seeds = sorted({r.seed for r in runs})
    incomplete = [line for line, df in predictions.items()
                  if len(df.groupby(["seed", "fold"])) != folds * len(seeds)]
    if incomplete:
        raise VitbenchError(f"model(s) {', '.join(incomplete)} lack predictions of some fold: the "
                            "pooled accuracy would not cover every image")
    every = pd.concat(predictions.values()).drop_duplicates(["seed", "path"])
    chance = stats.majority_rate(every["actual"].to_numpy())
    first = {line: next(r.metrics[line] for r in runs if line in r.metrics) for line in predictions}
    models = {line: {**_model(line, df, first[line], chance, line_name(line, first[line], runs)),
                     "budget": _budget(line, runs)} for line, df in predictions.items()}
    pairs = [_pair(a, b, predictions) for a, b in itertools.combinations(predictions, 2)]
    best = {kind: max((m for m, s in models.items() if s["kind"] == kind),
                      key=lambda m: models[m]["accuracy"], default=None) for kind in ("CNN", "ViT")}
    versus = None
    if best["CNN"] and best["ViT"]:
        versus = {**_pair(best["ViT"], best["CNN"], predictions),
                  "best_cnn": best["CNN"], "best_vit": best["ViT"],
                  "t_test_p": _corrected_t_test(predictions[best["ViT"]], predictions[best["CNN"]])}
    summary = {
        "folds": folds, "seeds": seeds, "experiments": len(runs),
        "test_images": int(every["path"].nunique()), "chance": chance, "models": models,
        "vit_minus_cnn": None if versus is None else versus["a_minus_b"],
        "cnn_vs_vit_p": None if versus is None else versus["p_value"],
        "t_test_p": None if versus is None else versus["t_test_p"],
        "versus": versus, "pairwise": pairs}
    summary["verdict"] = verdict(summary)
    return summary


def _model(line: str, df: pd.DataFrame, metrics: dict[str, Any], chance: float,
           name: str) -> dict[str, Any]:
    """One model line's pooled accuracy, Wilson interval, folds and chance test; `name` is its
    display name ("MobileNetV2 (transfer, random init)", see `sweep_summary`)."""
    correct, total = int(df["correct"].sum()), len(df)
    ci = stats.accuracy_interval(correct, total)
    p = stats.chance_p(correct, total, chance)
    per_fold = [{"seed": int(seed), "fold": int(fold), "accuracy": float(g["correct"].mean()),
                 "correct": int(g["correct"].sum()), "total": len(g)}
                for (seed, fold), g in df.groupby(["seed", "fold"], sort=True)]
    return {"display_name": name,
            "kind": kind_of(model_of(line), metrics),
            "accuracy": correct / total, "correct": correct, "total": total,
            "ci_low": ci.low, "ci_high": ci.high, "per_fold": per_fold,
            "chance_p": p, "at_chance": stats.at_chance(p)}


def _budget(line: str, runs: list[SweepRun]) -> dict[str, Any]:
    """A model line's inputs and training budget (its first fold's, the training seconds averaged
    over the folds): what `report_markdown.footing_sentence` compares."""
    mine = [r.metrics[line] for r in runs if line in r.metrics]
    budget = {k: mine[0][k] for k in FOOTING_KEYS if k in mine[0]}
    seconds = [float(m["train_seconds"]) for m in mine if "train_seconds" in m]
    if seconds:
        budget["train_seconds"] = float(np.mean(seconds))
    return budget


def _pair(a: str, b: str, predictions: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """McNemar of lines `a` and `b` over the images both predicted (paired by seed and path), and
    the 95% interval of the paired accuracy difference a - b."""
    both = predictions[a].merge(predictions[b], on=["seed", "path"], suffixes=("_a", "_b"))
    test = stats.mcnemar_exact(both["correct_a"].to_numpy(), both["correct_b"].to_numpy())
    n = len(both)
    diff = (test.only_a - test.only_b) / n
    se = math.sqrt(max(test.only_a + test.only_b - n * diff ** 2, 0.0)) / n
    z = scistats.norm.ppf(0.5 + stats.CONFIDENCE / 2)
    return {"a": a, "b": b, "images": n, "a_minus_b": diff, "ci_low": max(diff - z * se, -1.0),
            "ci_high": min(diff + z * se, 1.0), "only_a": test.only_a, "only_b": test.only_b,
            "p_value": test.p_value}


def _corrected_t_test(a: pd.DataFrame, b: pd.DataFrame) -> float | None:
    """Two-sided p of Nadeau and Bengio's corrected resampled t-test of the per-fold accuracy
    differences a - b (None with one fold or no training size)."""
    fa = a.groupby(["seed", "fold"]).agg(acc=("correct", "mean"), n=("correct", "size"), train=("train", "first"))
    fb = b.groupby(["seed", "fold"]).agg(acc=("correct", "mean"))
    d = (fa["acc"] - fb["acc"]).to_numpy()
    if len(d) < 2 or fa["train"].isna().any():
        return None
    ratio = float(fa["n"].mean() / fa["train"].mean())
    var = float(np.var(d, ddof=1))
    if var == 0:
        return 1.0 if float(d.mean()) == 0 else 0.0
    t = float(d.mean()) / math.sqrt((1 / len(d) + ratio) * var)
    return float(2 * scistats.t.sf(abs(t), df=len(d) - 1))


def verdict(summary: dict[str, Any]) -> str:
    """The one-sentence answer: which kind's best model is better and how sure, or that even all
    the images cannot tell them apart (with a bound on the difference), or why there is none."""
    from vitbench.core.markup import escape_text

    models, v = summary["models"], summary["versus"]
    name = lambda m: escape_text(models[m]["display_name"])  # noqa: E731
    if v is None:
        return "No CNN-vs-ViT verdict: the experiments hold only one of the two kinds."
    at_chance = [m for m in (v["best_cnn"], v["best_vit"]) if models[m]["at_chance"]]
    if at_chance:
        return ("No verdict: the best " + " and the best ".join(
            f"{models[m]['kind']}, {name(m)} ({models[m]['accuracy']:.1%}), is at chance "
            f"(majority class {summary['chance']:.1%}, p = {_p(models[m]['chance_p'])})" for m in at_chance)
            + ": a training failure, not evidence for the other kind.")
    vit, cnn = v["best_vit"], v["best_cnn"]
    n = v["images"]
    t = "" if v["t_test_p"] is None else f"; corrected resampled t-test over the folds p = {_p(v['t_test_p'])}"
    lead = f"the ViT's lead {v['ci_low'] * 100:+.1f} to {v['ci_high'] * 100:+.1f} points (95% CI)"
    scores = f"ViT {models[vit]['accuracy']:.1%}, CNN {models[cnn]['accuracy']:.1%}"
    if v["p_value"] < stats.ALPHA and v["a_minus_b"] != 0:
        win, lose = (vit, cnn) if v["a_minus_b"] > 0 else (cnn, vit)
        return (f"The {models[win]['kind']} is better: {name(win)} beats {name(lose)} over all {n} "
                f"test images ({scores}, McNemar p = {_p(v['p_value'])}, {lead}{t})."
                + _caveat(v))
    return (f"Undecided: even all {n} images cannot tell {name(vit)} and {name(cnn)} apart "
            f"({scores}, McNemar p = {_p(v['p_value'])}{t}); {lead}.")


def _caveat(v: dict[str, Any]) -> str:
    """What a significant McNemar test does not say when the fold-level test disagrees."""
    if v["t_test_p"] is None or v["t_test_p"] < stats.ALPHA:
        return ""
    return (" The corrected t-test over the folds, which also counts how much the result varies "
            "with the training set, is not significant: the lead holds on these images, a new "
            "training set may shrink it.")


def _p(p: float) -> str:
    from vitbench.report.markdown import _fmt_p

    return _fmt_p(p)


def render(summary: dict[str, Any]) -> str:
    """plots/cv/summary.md: per model the pooled accuracy and the folds, every pair, the verdict."""
    from vitbench.core.markup import escape_text

    models = summary["models"]
    table = pd.DataFrame([{
        "Model": escape_text(s["display_name"]) + (" (at chance)" if s["at_chance"] else ""),
        "Kind": s["kind"] or "-", "Pooled accuracy": f"{s['accuracy']:.1%}",
        "95% Wilson": f"{s['ci_low']:.1%} - {s['ci_high']:.1%}",
        "Correct": f"{s['correct']} / {s['total']}",
        "Per fold": ", ".join(f"{f['accuracy']:.1%}" for f in s["per_fold"]),
        "Chance p": _p(s["chance_p"])} for s in models.values()])
    pairs = pd.DataFrame([{
        "A": escape_text(models[r["a"]]["display_name"]), "B": escape_text(models[r["b"]]["display_name"]),
        "A - B": f"{r['a_minus_b'] * 100:+.1f} pt",
        "95% CI": f"{r['ci_low'] * 100:+.1f} to {r['ci_high'] * 100:+.1f} pt",
        "Only A right": str(r["only_a"]), "Only B right": str(r["only_b"]),
        "McNemar p": _p(r["p_value"])} for r in summary["pairwise"]])
    seeds = ", ".join(map(str, summary["seeds"]))
    lines = [f"# {summary['folds']}-fold cross-validation over {summary['test_images']} images "
             f"(seed {seeds})", "",
             f"Every image is tested once per seed; chance (the majority class) is "
             f"{summary['chance']:.1%}.", "",
             table.to_markdown(index=False, disable_numparse=True), ""]
    if len(pairs):
        lines += [pairs.to_markdown(index=False, disable_numparse=True), ""]
    lines += [summary["verdict"], ""]
    sentence = footing(summary)
    if sentence:
        lines += [sentence, ""]
    return "\n".join(lines)


def footing(summary: dict[str, Any]) -> str | None:
    """`report_markdown.footing_sentence` for the best CNN and best ViT (None without both, or
    for a summary whose models lack their budget)."""
    from vitbench.report.markdown import footing_sentence

    v, models = summary["versus"], summary["models"]
    if v is None:
        return None
    cnn, vit = (models[v[k]].get("budget") or {} for k in ("best_cnn", "best_vit"))
    needed = ("pretrained", "epochs_run", "train_seconds", "params_total")
    if not all(k in cnn and k in vit for k in needed):
        return None
    return footing_sentence(cnn, vit)
