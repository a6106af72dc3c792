"""`vitbench summarize --by PARAM`: accuracy against one swept param, over the seeds.

Reads the finished experiments of the current commit from `dvc exp show --json` (as `vitbench
summarize` does), groups them by the value of PARAM and, per model line and value, gives the mean
accuracy over the seeds, its 95% interval and the number of finished runs. With one run the
interval is that run's Wilson interval over its test images (from metrics/<id>.json); with two
runs or more, the Wilson interval of the test predictions of all of them pooled (the Student-t
interval of the mean over 2-3 seeds spans most of the axis and says nothing), or the t interval
(`stats.mean_interval`) where the predictions are not read; `ci_kind` says which. A line is a
model id, or `<id>@random_init` for a model meant to start from pretrained weights that did not
(metrics/<id>.json `pretrained` false): a second sweep with `-S cnn.pretrained=false` adds the
from-scratch CNN beside the pretrained one.

The CNN-or-ViT question at each value uses compare.md's rules: the best CNN and the best ViT (by
mean accuracy; CNN or ViT is the `kind` evaluate wrote from the model registry into
metrics/<id>_detail.json, read from each experiment's commit with its display name) are compared
with McNemar's exact test on their per-image correctness (plots/<id>/eval/predictions.csv of each
experiment, read from its git commit), pooled over the seeds: within one experiment both models
see the same test images, and the test split does not depend on the training size (only train
is cut). "Better" is said only when p < 0.05.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitbench.core import stats
from vitbench.core.errors import VitbenchError
from vitbench.core.markup import escape_text
from vitbench.core.paths import Paths
from vitbench.experiments.queue import (FINISHED, exp_show, json_at, model_metrics, predictions_at, walk,
                                        with_detail)
from vitbench.experiments.seeds import pooled_chance_p
from vitbench.models import registry

SIZE_KEY = "split.max_train_per_class"
UNITS = {SIZE_KEY: "images per class", "epochs": "epochs", "image_size": "px"}
RANDOM_INIT = "@random_init"   # the line suffix of a model meant to be pretrained, trained from random init
POOLED = "Wilson over the pooled test images of every seed"   # ci_kind of a point of several seeds


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
    classes: int | None = None      # classes in the split (metrics/split.json)


def lookup(params: dict[str, Any], key: str) -> Any:
    """The value of dotted `key` in params, KeyError when absent."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def sweep_runs(show: Any, by: str, prefix: str = "", root: Path | None = None) -> list[SweepRun]:
    """The finished experiments named `prefix`* in `dvc exp show --json` output that have model
    metrics, with (given the project `root`) each model's metrics/<id>_detail.json of the
    experiment's commit merged in (`queue.with_detail`: display name, kind, meant_pretrained).
    Each model's metrics go on its line (`line_of`); per line, value of `by` and seed the
    newest experiment counts. Experiments may differ in more than `by` and the seed only inside
    the params section of a model family (cnn, vit, vit_ft) whose lines they do not share (a
    second sweep with -S cnn.pretrained=false, say); anything else is refused: the curves would
    mix them."""
    runs: list[SweepRun] = []
    taken: dict[tuple[str, int, str], SweepRun] = {}
    for entry, state in walk(show):
        name, data = entry.get("name") or "", entry.get("data") or {}
        if not name or entry.get("rev") == "workspace" or not name.startswith(prefix) \
                or state not in FINISHED or not data.get("metrics"):
            continue
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        rev = str(entry.get("rev") or "")
        metrics = {line_of(m, d): d for m, d in ((m, with_detail(d, root, rev, m))
                                                 for m, d in model_metrics(data["metrics"]).items())}
        if not metrics or "seed" not in params:
            continue
        try:
            value = lookup(params, by)
        except KeyError:
            raise VitbenchError(f"--by {by}: experiment {name} has no such param in params.yaml") from None
        split = json_at(root, rev, Paths(root).metrics_json("split")) if root is not None and rev else {}
        classes = int(split["classes"]) if split.get("classes") else None
        per_class = split["train"] / classes if classes else None
        run = SweepRun(name, rev, int(params["seed"]), value, metrics, params, per_class,
                       classes)
        for line in list(metrics):   # exp show lists the newest first
            older = taken.setdefault((json.dumps(value), run.seed, line), run)
            if older is not run:
                _check_same(older, run, by, same_point=True)
                del metrics[line]
        if metrics:
            runs.append(run)
    sections = set(registry.family_names())   # a family's params section is its name
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            _check_same(a, b, by, same_point=False, sections=sections)
    return sorted(runs, key=lambda r: (_order(r.value), r.seed))


def line_of(model_id: str, metrics: dict[str, Any]) -> str:
    """The curve a model's metrics belong to: its id, or `<id>@random_init` for a model meant to
    start from pretrained weights that did not (cnn.pretrained false, or no weights found)."""
    random = metrics.get("meant_pretrained") is True and metrics.get("pretrained") is False
    return f"{model_id}{RANDOM_INIT}" if random else model_id


def model_of(line: str) -> str:
    """The model id of a line (`cnn_finetuned@random_init` -> cnn_finetuned)."""
    return line.split("@", 1)[0]


def _family(line: str, metrics: dict[str, Any]) -> str:
    spec = registry.models().get(model_of(line))
    return str(metrics.get("family") or (spec.family if spec else ""))


def _check_same(a: SweepRun, b: SweepRun, by: str, same_point: bool,
                sections: set[str] | None = None) -> None:
    """Refuse two experiments whose params differ (besides `by` and the seed) where it matters:
    anywhere for the same point; else outside the families' sections, or inside the section of a
    family that has a line in both."""
    fa, fb = _flat(a.params), _flat(b.params)
    differ = sorted(k for k in set(fa) | set(fb) if k not in (by, "seed") and fa.get(k) != fb.get(k))
    if not same_point and sections is not None:
        both = set(a.metrics) & set(b.metrics)
        shared = {_family(line, a.metrics[line]) for line in both}
        free = sections - shared
        differ = [k for k in differ if k.split(".", 1)[0] not in free]
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


def aggregate(runs: list[SweepRun], by: str, root: Path | None = None) -> dict[str, Any]:
    """Per model line and value: runs, mean, std, 95% interval (kind), mean train seconds, x and,
    with `root` (to read each experiment's predictions.csv), chance_p and at_chance."""
    _numeric(runs, by)
    values = list(dict.fromkeys(json.dumps(r.value) for r in runs))
    models: dict[str, Any] = {}
    for line in dict.fromkeys(m for r in runs for m in r.metrics):
        points = []
        for v in values:
            here = [r for r in runs if json.dumps(r.value) == v and line in r.metrics]
            if here:
                points.append(_point(here, line, by, root))
        first = next(r.metrics[line] for r in runs if line in r.metrics)
        models[line] = {"kind": kind_of(model_of(line), first), "model": model_of(line),
                        "display_name": line_name(line, first, runs), "points": points}
    return models


def line_name(line: str, metrics: dict[str, Any], runs: list[SweepRun]) -> str:
    """evaluate's display name, with "random init" and the values of the model's section where
    the other experiments differ ("MobileNetV2 (fine-tuned, random init, 64 px, 10 epochs)")."""
    name = str(metrics.get("display_name") or model_of(line))
    section = _family(line, metrics)   # a family's params section is its name
    mine = [r for r in runs if line in r.metrics]
    own = {k: v for k, v in _flat(mine[0].params).items() if k.split(".", 1)[0] == section}
    notes = ["random init"] if line.endswith(RANDOM_INIT) else []
    notes += [f"{v} {unit(k)}" if unit(k) else f"{k.rsplit('.', 1)[-1]} {v}" for k, v in own.items()
              if not k.endswith(".pretrained") and any(_flat(r.params).get(k) != v for r in runs)]
    if not notes:
        return name
    return f"{name[:-1]}, {', '.join(notes)})" if name.endswith(")") else f"{name} ({', '.join(notes)})"


def _point(runs: list[SweepRun], line: str, by: str, root: Path | None) -> dict[str, Any]:
    preds = None if root is None else [predictions_at(root, r.rev, model_of(line)) for r in runs]
    chance = None if preds is None else pooled_chance_p(preds)
    acc = [float(r.metrics[line]["accuracy"]) for r in runs]
    spread = stats.mean_interval(acc, bounds=(0.0, 1.0))
    low, high, ci_kind = spread.low, spread.high, "t over seeds"
    if spread.n == 1:
        m = runs[0].metrics[line]
        low, high = m.get("accuracy_ci_low"), m.get("accuracy_ci_high")
        ci_kind = "Wilson over test images" if low is not None else "none"
    elif preds is not None:   # a t interval over 2-3 seeds spans most of the axis: pool instead
        pooled = pd.concat(preds)
        ci = stats.accuracy_interval(int((pooled["actual"] == pooled["predicted"]).sum()), len(pooled))
        low, high, ci_kind = ci.low, ci.high, POOLED
    seconds = [float(r.metrics[line]["train_seconds"]) for r in runs
               if "train_seconds" in r.metrics[line]]
    per_class = [r.train_per_class for r in runs if r.train_per_class]
    value = runs[0].value
    x = float(np.mean(per_class)) if value is None and per_class else float(value)
    return {"value": value, "x": x, "label": label(value, by, x if value is None else None),
            "n": spread.n, "mean": spread.mean, "std": spread.std, "ci_low": low, "ci_high": high,
            "ci_kind": ci_kind, "train_seconds": float(np.mean(seconds)) if seconds else None,
            "runs": [r.name for r in runs], "chance_p": chance,
            "at_chance": chance is not None and stats.at_chance(chance)}


def kind_of(model_id: str, metrics: dict[str, Any]) -> str:
    """CNN or ViT: what evaluate wrote from the registry; the registry itself for older runs."""
    if "kind" in metrics:
        return str(metrics["kind"])
    return str(registry.kind(model_id))


def versus(runs: list[SweepRun], models: dict[str, Any], root: Path | None) -> list[dict[str, Any]]:
    """Per value: the best CNN and best ViT by mean accuracy, the difference, and McNemar's exact
    test on their per-image correctness pooled over the seeds (p None without `root`); `void`
    when either best is at chance (then it decides nothing)."""
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
        here = [r for r in runs if json.dumps(r.value) == v]
        test = _pooled_mcnemar(here, vit, cnn, root) if root is not None else None
        rows.append({"value": json.loads(v), "label": means[vit]["label"], "best_cnn": cnn,
                     "best_vit": vit, "difference": means[vit]["mean"] - means[cnn]["mean"],
                     "void": bool(means[cnn].get("at_chance") or means[vit].get("at_chance")),
                     "p_value": None if test is None else test.p_value,
                     "vit_only_right": None if test is None else test.only_a,
                     "cnn_only_right": None if test is None else test.only_b})
    return rows


def _pooled_mcnemar(runs: list[SweepRun], a: str, b: str, root: Path) -> stats.McNemar | None:
    """McNemar on lines `a` and `b`, pooled over the seeds that have both: per seed, each line's
    experiment (one experiment, or two sweeps' of the same seed: the same test split) and the
    test images both predicted."""
    right_a, right_b = [], []
    for seed in sorted({r.seed for r in runs}):
        ra = next((r for r in runs if r.seed == seed and a in r.metrics), None)
        rb = next((r for r in runs if r.seed == seed and b in r.metrics), None)
        if ra is None or rb is None:
            continue
        pa, pb = _correct(root, ra.rev, model_of(a)), _correct(root, rb.rev, model_of(b))
        shared = pa.index.intersection(pb.index)
        right_a.append(pa.loc[shared].to_numpy())
        right_b.append(pb.loc[shared].to_numpy())
    return stats.mcnemar_exact(np.concatenate(right_a), np.concatenate(right_b)) if right_a else None


def _correct(root: Path, rev: str, model_id: str) -> pd.Series:
    """Per test image: whether `model_id` got it right in the experiment at commit `rev`."""
    df = predictions_at(root, rev, model_id)
    return df["actual"] == df["predicted"]


def crossover(rows: list[dict[str, Any]], by: str) -> dict[str, Any]:
    """Where the best ViT gets ahead of the best CNN and stays ahead up to the largest value
    tried, with the values where that lead is significant (p < 0.05), as a sentence. A value
    where either best is at chance (`void`) decides nothing and is named apart."""
    void = [r for r in rows if r.get("void")]
    rows = [r for r in rows if not r.get("void")]
    at = (f" (no verdict at {_values([r['label'] for r in void], by)}: the best CNN or ViT there "
          "is at chance level)") if void else ""
    if void and not rows:
        return {"from": None, "significant_at": [], "sentence": "no verdict at any value tried: "
                f"the best CNN or ViT is at chance level at {_values([r['label'] for r in void], by)}."}
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
            "significant_at": [r["value"] for r in significant], "sentence": sentence[:-1] + at + "."}


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
    values = {json.dumps(r.value) for r in runs}
    if len(values) == 1:
        raise VitbenchError(f"--by {by}: nothing was swept: every finished experiment ({len(runs)}) has "
                            f"{by} = {values.pop()}, so there is no curve to draw; run "
                            f"`vitbench sweep -S {by}=V1,V2,...` first (or --by a key that was swept)")
    models = aggregate(runs, by, root)
    rows = versus(runs, models, root)
    classes = {r.classes for r in runs}
    return {"by": by, "unit": unit(by), "seeds": sorted({r.seed for r in runs}),
            "experiments": len(runs), "models": models, "versus": rows,
            "crossover": crossover(rows, by),
            "chance": 1 / classes.pop() if len(classes) == 1 and None not in classes else None}


def render(summary: dict[str, Any]) -> str:
    """The summary as markdown: per model and value, then CNN against ViT per value."""
    from vitbench.report.markdown import _fmt_p

    by = escape_text(summary["by"])
    table = pd.DataFrame([{
        by: escape_text(p["label"]), "Model": escape_text(s["display_name"]), "Kind": escape_text(s["kind"]),
        "Runs": str(p["n"]), "Mean accuracy": f"{p['mean']:.1%}" + (" (at chance)" if p.get("at_chance") else ""),
        "Chance p": "-" if p.get("chance_p") is None else f"{p['chance_p']:.2g}",
        "95% interval": "-" if p["ci_low"] is None else f"{p['ci_low']:.1%} - {p['ci_high']:.1%}",
        "Interval": p["ci_kind"],
        "Train s": "-" if p["train_seconds"] is None else f"{p['train_seconds']:.0f}"}
        for s in summary["models"].values() for p in s["points"]])
    lines = [f"# Accuracy by {by} ({len(summary['seeds'])} seed(s): "
             f"{', '.join(map(str, summary['seeds']))})", "",
             table.to_markdown(index=False, disable_numparse=True), ""]
    if summary["versus"]:
        names = {m: escape_text(s["display_name"]) for m, s in summary["models"].items()}
        pairs = pd.DataFrame([{
            by: escape_text(r["label"]), "Best CNN": names[r["best_cnn"]], "Best ViT": names[r["best_vit"]],
            "ViT - CNN": f"{r['difference'] * 100:+.1f} pt"
                         + (" (at chance: no verdict)" if r.get("void") else ""),
            "McNemar p": "-" if r["p_value"] is None else _fmt_p(r["p_value"])}
            for r in summary["versus"]])
        lines += [pairs.to_markdown(index=False, disable_numparse=True), ""]
    sentence = summary["crossover"]["sentence"]
    lines += [escape_text(sentence[0].upper() + sentence[1:]), ""]
    return "\n".join(lines)


def summarize_project(root: Path, by: str, prefix: str = "") -> dict[str, Any]:
    """`summarize_by` over the experiments of the project at `root`."""
    return summarize_by(sweep_runs(exp_show(root), by, prefix, root), by, root)
