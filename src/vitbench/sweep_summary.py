"""`vitbench summarize --by PARAM`: accuracy against one swept param, over the seeds.

Reads the finished experiments of the current commit from `dvc exp show --json` (as `vitbench
summarize` does), groups them by the value of PARAM and, per model and value, gives the mean
accuracy over the seeds, its 95% interval and the number of finished runs. The interval is the
Student-t interval of the mean over seeds (`stats.mean_interval`) when there are two runs or more;
with one run it is that run's Wilson interval over its test images (from metrics/<id>.json), and
`ci_kind` says which.

The CNN-or-ViT question at each value uses compare.md's rules: the best CNN and the best ViT (by
mean accuracy; CNN or ViT is the `kind` evaluate wrote from the model registry) are compared
with McNemar's exact test on their per-image correctness (plots/<id>/eval/predictions.csv of each
experiment, read from its git commit), pooled over the seeds: within one experiment both models
see the same test images, and the test split does not depend on the training size (only train
is cut). "Better" is said only when p < 0.05.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitbench import stats
from vitbench.errors import VitbenchError
from vitbench.seeds import FINISHED, _dvc, _model_metrics, _walk

SIZE_KEY = "split.max_train_per_class"
UNITS = {SIZE_KEY: "images per class", "train.epochs": "epochs", "image_size": "px"}


@dataclass(frozen=True)
class SweepRun:
    """One finished experiment: name, commit, seed, the swept value and each model's metrics."""

    name: str
    rev: str
    seed: int
    value: Any
    metrics: dict[str, dict[str, Any]]
    params: dict[str, Any]
    train_per_class: float | None   # mean training images per class (metrics/split.json)


def lookup(params: dict[str, Any], key: str) -> Any:
    """The value of dotted `key` in params, KeyError when absent."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def sweep_runs(show: Any, by: str, prefix: str = "") -> list[SweepRun]:
    """The finished experiments named `prefix`* in `dvc exp show --json` output that have model
    metrics, one per (value of `by`, seed): the newest when equal in every other param. Runs
    that differ in another param than `by` and the seed are refused: the curve would mix them."""
    runs: dict[tuple[str, int], SweepRun] = {}
    for entry, state in _walk(show):
        name, data = entry.get("name") or "", entry.get("data") or {}
        if not name or entry.get("rev") == "workspace" or not name.startswith(prefix) \
                or state not in FINISHED or not data.get("metrics"):
            continue
        metrics = _model_metrics(data["metrics"])
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        if not metrics or "seed" not in params:
            continue
        try:
            value = lookup(params, by)
        except KeyError:
            raise VitbenchError(f"--by {by}: experiment {name} has no such param in params.yaml") from None
        split = ((data["metrics"].get("metrics/split.json") or {}).get("data")) or {}
        per_class = split["train"] / split["classes"] if split.get("classes") else None
        run = SweepRun(name, str(entry.get("rev")), int(params["seed"]), value, metrics, params, per_class)
        key = (json.dumps(value), run.seed)
        if key in runs:       # exp show lists the newest first
            _check_same(runs[key], run, by, same_point=True)
            continue
        runs[key] = run
    found = list(runs.values())
    for run in found[1:]:
        _check_same(found[0], run, by, same_point=False)
    return sorted(found, key=lambda r: (_order(r.value), r.seed))


def _check_same(a: SweepRun, b: SweepRun, by: str, same_point: bool) -> None:
    differ = sorted(k for k in set(_flat(a.params)) | set(_flat(b.params))
                    if k not in (by, "seed") and _flat(a.params).get(k) != _flat(b.params).get(k))
    if differ:
        point = f"both have {by} = {a.value!r} and seed {a.seed} but" if same_point else "also"
        raise VitbenchError(f"experiments {a.name} and {b.name} {point} differ in "
                            f"{', '.join(differ[:5])}: pick one sweep's experiments with --prefix NAME")


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _order(value: Any) -> float:
    """Sort key: numbers as they are, null (every image) last."""
    return math.inf if value is None else float(value)


def _numeric(runs: list[SweepRun], by: str) -> None:
    bad = [r for r in runs if isinstance(r.value, bool) or not (
        isinstance(r.value, (int, float)) or (r.value is None and by == SIZE_KEY))]
    if bad:
        raise VitbenchError(f"--by {by}: experiment {bad[0].name} has {by} = {bad[0].value!r}, "
                            "not a number: summarize --by draws numeric params only")


def unit(by: str) -> str:
    return UNITS.get(by, UNITS.get(by.rsplit(".", 1)[-1], ""))


def label(value: Any, by: str, per_class: float | None = None) -> str:
    """"25 images per class", "all images (~93 per class)", "64 px", "10 epochs", "0.001"."""
    if value is None:
        return "all images" + (f" (~{per_class:.0f} per class)" if per_class else "")
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit(by)}".strip()


def aggregate(runs: list[SweepRun], by: str) -> dict[str, Any]:
    """Per model and value: runs, mean, std, 95% interval (kind), mean train seconds, x."""
    _numeric(runs, by)
    values = list(dict.fromkeys(json.dumps(r.value) for r in runs))
    models: dict[str, Any] = {}
    for model_id in dict.fromkeys(m for r in runs for m in r.metrics):
        points = []
        for v in values:
            here = [r for r in runs if json.dumps(r.value) == v and model_id in r.metrics]
            if here:
                points.append(_point(here, model_id, by))
        first = next(r.metrics[model_id] for r in runs if model_id in r.metrics)
        models[model_id] = {"kind": _kind(model_id, first),
                            "display_name": str(first.get("display_name") or model_id),
                            "points": points}
    return models


def _point(runs: list[SweepRun], model_id: str, by: str) -> dict[str, Any]:
    acc = [float(r.metrics[model_id]["accuracy"]) for r in runs]
    spread = stats.mean_interval(acc, bounds=(0.0, 1.0))
    low, high, kind = spread.low, spread.high, "t over seeds"
    if spread.n == 1:
        m = runs[0].metrics[model_id]
        low, high = m.get("accuracy_ci_low"), m.get("accuracy_ci_high")
        kind = "Wilson over test images" if low is not None else "none"
    seconds = [float(r.metrics[model_id]["train_seconds"]) for r in runs
               if "train_seconds" in r.metrics[model_id]]
    per_class = [r.train_per_class for r in runs if r.train_per_class]
    value = runs[0].value
    x = float(np.mean(per_class)) if value is None and per_class else float(value)
    return {"value": value, "x": x, "label": label(value, by, x if value is None else None),
            "n": spread.n, "mean": spread.mean, "std": spread.std, "ci_low": low, "ci_high": high,
            "ci_kind": kind, "train_seconds": float(np.mean(seconds)) if seconds else None,
            "runs": [r.name for r in runs]}


def _kind(model_id: str, metrics: dict[str, Any]) -> str:
    """CNN or ViT: what evaluate wrote from the registry; the registry itself for older runs."""
    if "kind" in metrics:
        return str(metrics["kind"])
    from vitbench.models import registry

    return str(registry.kind(model_id))


def versus(runs: list[SweepRun], models: dict[str, Any], root: Path | None) -> list[dict[str, Any]]:
    """Per value: the best CNN and best ViT by mean accuracy, the difference, and McNemar's exact
    test on their per-image correctness pooled over the seeds (p None without `root`)."""
    cnns = [m for m, s in models.items() if s["kind"] == "CNN"]
    vits = [m for m, s in models.items() if s["kind"] == "ViT"]
    rows = []
    values = list(dict.fromkeys(json.dumps(p["value"]) for s in models.values() for p in s["points"]))
    for v in sorted(values, key=lambda t: _order(json.loads(t))):
        means = {m: p for m, s in models.items() for p in s["points"] if json.dumps(p["value"]) == v}
        cnn = max((m for m in cnns if m in means), key=lambda m: means[m]["mean"], default=None)
        vit = max((m for m in vits if m in means), key=lambda m: means[m]["mean"], default=None)
        if cnn is None or vit is None:
            continue
        here = [r for r in runs if json.dumps(r.value) == v and cnn in r.metrics and vit in r.metrics]
        test = _pooled_mcnemar(here, vit, cnn, root) if root is not None and here else None
        rows.append({"value": json.loads(v), "label": means[vit]["label"], "best_cnn": cnn,
                     "best_vit": vit, "difference": means[vit]["mean"] - means[cnn]["mean"],
                     "p_value": None if test is None else test.p_value,
                     "vit_only_right": None if test is None else test.only_a,
                     "cnn_only_right": None if test is None else test.only_b})
    return rows


def _pooled_mcnemar(runs: list[SweepRun], a: str, b: str, root: Path) -> stats.McNemar:
    right_a, right_b = [], []
    for run in runs:
        pa, pb = _correct(root, run.rev, a), _correct(root, run.rev, b)
        shared = pa.index.intersection(pb.index)
        right_a.append(pa.loc[shared].to_numpy())
        right_b.append(pb.loc[shared].to_numpy())
    return stats.mcnemar_exact(np.concatenate(right_a), np.concatenate(right_b))


def _correct(root: Path, rev: str, model_id: str) -> pd.Series:
    """Per test image: whether `model_id` got it right in the experiment at commit `rev`."""
    path = f"plots/{model_id}/eval/predictions.csv"
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VitbenchError(f"{path} of experiment commit {rev[:7]} could not be read: {proc.stderr.strip()}")
    df = pd.read_csv(io.StringIO(proc.stdout), dtype={"actual": str, "predicted": str},
                     keep_default_na=False).drop_duplicates("path").set_index("path")
    return df["actual"] == df["predicted"]


def crossover(rows: list[dict[str, Any]], by: str) -> dict[str, Any]:
    """Where the best ViT gets ahead of the best CNN and stays ahead up to the largest value
    tried, with the values where that lead is significant (p < 0.05), as a sentence."""
    if not rows:
        return {"from": None, "significant_at": [],
                "sentence": "no crossover to report: the runs hold only one of CNNs and ViTs."}
    ahead = [r["difference"] > 0 for r in rows]
    start = len(rows)
    while start > 0 and ahead[start - 1]:
        start -= 1
    tail = rows[start:]
    significant = [r for r in tail if r["p_value"] is not None and r["p_value"] < stats.ALPHA]
    tested = any(r["p_value"] is not None for r in tail)
    note = (f" (p < 0.05 at {_and([_bare(r['label'], by) for r in significant])})" if significant else
            " (not significant at any of them: McNemar p >= 0.05)" if tested else "")
    if not tail:
        cnn_sig = [r["label"] for r in rows if r["p_value"] is not None and r["p_value"] < stats.ALPHA
                   and r["difference"] < 0]
        extra = f"; the best CNN is significantly better at {_values(cnn_sig, by)}" if cnn_sig else ""
        sentence = (f"no crossover in the range tried: the best ViT is not ahead of the best CNN "
                    f"at {rows[-1]['label']}{extra}.")
    elif start == 0:
        sentence = (f"no crossover in the range tried: the best ViT is ahead of the best CNN at "
                    f"every value tried, {rows[0]['label']} to {rows[-1]['label']}{note}.")
    elif len(tail) == 1:
        sentence = f"the best ViT is ahead of the best CNN only at {tail[0]['label']}{note}."
    else:
        sentence = f"the best ViT is ahead of the best CNN from {tail[0]['label']} on{note}."
    return {"from": tail[0]["value"] if tail and start > 0 else None,
            "significant_at": [r["value"] for r in significant], "sentence": sentence}


def _bare(text: str, by: str) -> str:
    """"50 images per class" -> "50" inside the p list (the unit is said once)."""
    suffix = f" {unit(by)}"
    return text[:-len(suffix)] if unit(by) and text.endswith(suffix) else text


def _values(labels: Sequence[str], by: str) -> str:
    """"5, 10 and 25 images per class": the unit said once for the labels that have it, the
    others ("all images (~234 per class)") after them."""
    with_unit = [_bare(t, by) for t in labels if unit(by) and _bare(t, by) != t]
    others = [t for t in labels if not unit(by) or _bare(t, by) == t]
    head = [f"{_and(with_unit)} {unit(by)}"] if with_unit else []
    return _and(head + others)


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def summarize_by(runs: list[SweepRun], by: str, root: Path | None = None) -> dict[str, Any]:
    """The whole summary as data (what `--json` prints)."""
    if not runs:
        raise VitbenchError(f"no finished experiment with model metrics: run `vitbench sweep -S {by}=...` first")
    models = aggregate(runs, by)
    rows = versus(runs, models, root)
    return {"by": by, "unit": unit(by), "seeds": sorted({r.seed for r in runs}),
            "experiments": len(runs), "models": models, "versus": rows,
            "crossover": crossover(rows, by)}


def render(summary: dict[str, Any]) -> str:
    """The summary as markdown: per model and value, then CNN against ViT per value."""
    from vitbench.report_markdown import _fmt_p

    by = summary["by"]
    table = pd.DataFrame([{
        by: p["label"], "Model": s["display_name"], "Kind": s["kind"], "Runs": str(p["n"]),
        "Mean accuracy": f"{p['mean']:.1%}",
        "95% interval": "-" if p["ci_low"] is None else f"{p['ci_low']:.1%} - {p['ci_high']:.1%}",
        "Interval": p["ci_kind"],
        "Train s": "-" if p["train_seconds"] is None else f"{p['train_seconds']:.0f}"}
        for s in summary["models"].values() for p in s["points"]])
    lines = [f"# Accuracy by {by} ({len(summary['seeds'])} seed(s): "
             f"{', '.join(map(str, summary['seeds']))})", "",
             table.to_markdown(index=False, disable_numparse=True), ""]
    if summary["versus"]:
        names = {m: s["display_name"] for m, s in summary["models"].items()}
        pairs = pd.DataFrame([{
            by: r["label"], "Best CNN": names[r["best_cnn"]], "Best ViT": names[r["best_vit"]],
            "ViT - CNN": f"{r['difference'] * 100:+.1f} pt",
            "McNemar p": "-" if r["p_value"] is None else _fmt_p(r["p_value"])}
            for r in summary["versus"]])
        lines += [pairs.to_markdown(index=False, disable_numparse=True), ""]
    sentence = summary["crossover"]["sentence"]
    lines += [sentence[0].upper() + sentence[1:], ""]
    return "\n".join(lines)


def summarize_project(root: Path, by: str, prefix: str = "") -> dict[str, Any]:
    """`summarize_by` over the experiments of the project at `root`."""
    show = json.loads(_dvc(["exp", "show", "--json"], root) or "[]")
    return summarize_by(sweep_runs(show, by, prefix), by, root)
