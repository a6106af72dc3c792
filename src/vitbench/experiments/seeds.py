"""Repeated runs: the whole comparison over several seeds, as DVC experiments, and their summary.

`run_seeds` queues one experiment per seed (`dvc exp run --queue -S seed=N -n seed-N`), starts
the queue and waits for it; `dvc repro` and the workspace stay as they are. The seed drives
everything downstream of it (the demo's drawn dataset, the split, augmentation, initialisation,
shuffling), so the spread over seeds is the spread a user would see by re-running the study.

`summarize` reads `dvc exp show --json`: per model, the mean, standard deviation and 95% t
interval of the accuracy over the seeds, and whether the best CNN and the best ViT keep their
order in every seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.core.config import PARAMS_FILE, read_params
from vitbench.core.errors import ConfigError, VitbenchError
from vitbench.core.markup import escape_text
from vitbench.core.stats import ALPHA, at_chance, chance_p, majority_rate, mean_interval
from vitbench.experiments.queue import (FINISHED, dvc, exp_show, model_metrics, predictions_at,
                                        start_queue, wait_for_queue, walk, with_detail)
from vitbench.models.registry import params_from_dict

EXP_PREFIX = "seed-"


def run_seeds(seeds: list[int], root: Path, jobs: int = 1, wait: bool = True,
              timeout: float = 24 * 3600, models: Sequence[str] = ()) -> None:
    """Queue one experiment per seed (named seed-N), start the queue and, with `wait`, block
    until no experiment is queued or running; a failed experiment is a VitbenchError.
    `models` limits each run to those models' evaluate stages (and what they need); default all.
    Nothing is queued unless the seeds are distinct, there is at least one and each makes a
    valid params.yaml."""
    check_seeds(seeds)
    check_seed_params(seeds, root)
    targets = [f"evaluate@{model}" for model in models]
    for seed in seeds:
        dvc(["exp", "run", "--queue", "-S", f"seed={seed}", "-n", f"{EXP_PREFIX}{seed}", *targets],
             root)
    start_queue(root, jobs)
    if wait:
        wait_for_queue(root, timeout, jobs=jobs)


def check_seeds(seeds: Sequence[int]) -> None:
    """A VitbenchError unless `seeds` holds at least one seed and no seed twice (each seed is one
    experiment, named seed-N)."""
    if not seeds:
        raise VitbenchError("no seeds given: name at least one, e.g. --seeds 1,2,3")
    twice = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if twice:
        raise VitbenchError(f"seed(s) {', '.join(map(str, twice))} given more than once: each seed "
                            f"is one experiment ({EXP_PREFIX}N); nothing was queued")


def check_seed_params(seeds: Sequence[int], root: Path) -> None:
    """A VitbenchError unless params.yaml at `root` with each seed set (as `dvc exp run -S seed=N`
    writes it) is a valid params.yaml, as a stage validates it."""
    raw = read_params(root / PARAMS_FILE)
    for seed in seeds:
        try:
            params_from_dict({**raw, "seed": seed})
        except ConfigError as exc:
            raise VitbenchError(f"--seeds: seed {seed} is not allowed ({exc}); nothing was queued") from None


@dataclass(frozen=True)
class SeedRun:
    """One finished experiment: its name, seed, each model's accuracy and kind (CNN or ViT, as
    evaluate wrote it into metrics/<id>_detail.json from the model registry) and its git commit."""

    name: str
    seed: int
    accuracy: dict[str, float]
    kinds: dict[str, str] = field(default_factory=dict)
    rev: str = ""


def experiments(show: Any, prefix: str = EXP_PREFIX, root: Path | None = None) -> list[SeedRun]:
    """The finished experiments named `prefix`* in `dvc exp show --json` output, one per seed (the
    newest wins), in seed order. A queued, running or failed experiment is left out: until it
    succeeds, `exp show` lists it with its baseline's metrics. Each model's kind comes from its
    metrics/<id>_detail.json at the experiment's commit (`with_detail`; needs `root`)."""
    runs: dict[int, SeedRun] = {}
    for entry, state in walk(show):
        name = entry.get("name") or ""
        data = entry.get("data") or {}
        if not name.startswith(prefix) or not data.get("metrics") or state not in FINISHED:
            continue
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        if "seed" not in params or int(params["seed"]) in runs:
            continue
        rev = str(entry.get("rev") or "")
        accuracy, kinds = {}, {}
        for model_id, metrics in model_metrics(data["metrics"]).items():
            accuracy[model_id] = float(metrics["accuracy"])
            kind = with_detail(metrics, root, rev, model_id).get("kind")
            if kind is not None:
                kinds[model_id] = str(kind)
        if accuracy:
            runs[int(params["seed"])] = SeedRun(name, int(params["seed"]), accuracy, kinds, rev)
    return [runs[s] for s in sorted(runs)]


def summarize(runs: list[SeedRun], root: Path | None = None) -> dict[str, Any]:
    """Per model: n, mean, std, 95% interval, min, max of the accuracy and, with `root` (the
    project, to read each experiment's predictions.csv), its `chance_p` over the seeds and whether
    it is `at_chance`; per seed: the best CNN and ViT and the winner, void ("at chance") when the
    best of a kind is at chance; and whether the winner is the same in every seed."""
    if not runs:
        raise VitbenchError(f"no finished experiment named {EXP_PREFIX}*: run `vitbench seeds` first")
    models = {}
    for model_id in dict.fromkeys(m for r in runs for m in r.accuracy):
        values = [r.accuracy[model_id] for r in runs if model_id in r.accuracy]
        if values:
            s = mean_interval(values, bounds=(0.0, 1.0))
            p = None if root is None else pooled_chance_p(
                [predictions_at(root, r.rev, model_id) for r in runs if model_id in r.accuracy])
            models[model_id] = {"n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.low,
                                "ci_high": s.high, "min": min(values), "max": max(values),
                                "chance_p": p, "at_chance": p is not None and at_chance(p)}
    per_seed = []
    for r in runs:
        best = {kind: max((k for k in r.accuracy if r.kinds.get(k) == kind), key=r.accuracy.__getitem__,
                          default=None) for kind in ("CNN", "ViT")}
        cnn, vit = (None if best[k] is None else r.accuracy[best[k]] for k in ("CNN", "ViT"))
        winner = None if cnn is None or vit is None else \
            "at chance" if any(models[m]["at_chance"] for m in best.values() if m) else \
            "tie" if cnn == vit else ("ViT" if vit > cnn else "CNN")
        per_seed.append({"seed": r.seed, "name": r.name, "best_cnn": cnn, "best_vit": vit,
                         "winner": winner, **r.accuracy})
    winners = {s["winner"] for s in per_seed}
    holds = len(winners) == 1 and winners <= {"CNN", "ViT"}
    return {"seeds": [r.seed for r in runs], "models": models, "per_seed": per_seed,
            "ranking_holds": holds, "winner": next(iter(winners)) if holds else None}


def pooled_chance_p(predictions: Sequence[pd.DataFrame]) -> float:
    """`stats.chance_p` of a model's test predictions pooled over experiments: its correct
    answers against the majority-class rate of all their test labels."""
    both = pd.concat(list(predictions))
    correct = int((both["actual"] == both["predicted"]).sum())
    return chance_p(correct, len(both), majority_rate(both["actual"].to_numpy()))


def render(summary: dict[str, Any]) -> str:
    """The summary as markdown: the spread per model (at chance marked), the seeds, and the
    verdict; model names escaped (`markup.escape_text`)."""
    rows = [{"Model": escape_text(m) + (" (at chance)" if s.get("at_chance") else ""),
             "Seeds": str(s["n"]), "Mean": f"{s['mean']:.1%}", "Std": f"{s['std'] * 100:.1f} pt",
             "95% CI of the mean": "-" if s["ci_low"] is None else f"{s['ci_low']:.1%} - {s['ci_high']:.1%}",
             "Min": f"{s['min']:.1%}", "Max": f"{s['max']:.1%}",
             "Chance p": "-" if s.get("chance_p") is None else f"{s['chance_p']:.2g}"}
            for m, s in summary["models"].items()]
    seeds = pd.DataFrame([{"Seed": str(s["seed"]),
                           **{escape_text(m): "-" if m not in s else f"{s[m]:.1%}" for m in summary["models"]},
                           "Winner": s["winner"] or "-"} for s in summary["per_seed"]])
    n = len(summary["seeds"])
    counts = pd.Series([s["winner"] for s in summary["per_seed"]]).value_counts()
    chance = [escape_text(m) for m, s in summary["models"].items() if s.get("at_chance")]
    void = "at chance" in counts
    verdict = (f"The best {summary['winner']} beats the best of the other family in all {n} seeds."
               if summary["ranking_holds"] else
               f"No verdict in {counts['at chance']} of {n} seeds: the best of a family there is "
               "at chance level (no better than always answering the majority class)." if void else
               "The CNN-vs-ViT ranking does NOT hold in every seed: "
               + ", ".join(f"{w} wins {c} of {n}" for w, c in counts.items()) + ".")
    table = pd.DataFrame(rows)
    return "\n".join([
        f"# Accuracy over {n} seeds", "",
        table.to_markdown(index=False, disable_numparse=True), "",
        seeds.to_markdown(index=False, disable_numparse=True), "", verdict,
        *([f"At chance (chance p >= {ALPHA}; never counted as best): {', '.join(chance)}."] if chance else []),
        ""])


def summarize_project(root: Path, prefix: str = EXP_PREFIX) -> dict[str, Any]:
    """`summarize` over the experiments `dvc exp show --json` lists in the project at `root`."""
    return summarize(experiments(exp_show(root), prefix, root), root)
