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

import io
import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from vitbench.core.config import PARAMS_FILE, read_params
from vitbench.models.registry import model_ids, params_from_dict
from vitbench.core.errors import ConfigError, VitbenchError
from vitbench.core.markup import escape_text
from vitbench.core.paths import Paths
from vitbench.core.stats import ALPHA, at_chance, chance_p, majority_rate, mean_interval

EXP_PREFIX = "seed-"
FINISHED = (None, "success")   # executor states of a finished experiment (None: not from the queue)
POLL_SECONDS = 5.0
STALL_POLLS = 24       # polls with tasks queued and none running before the workers are restarted
STATUS_RETRIES = 3     # `dvc queue status` failures in a row ridden out before giving up
QUEUE_STATES = ("Queued", "Running", "Success", "Failed")


def _run_dvc(args: list[str], root: Path, **kwargs: Any) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["dvc", *args], cwd=root, **kwargs)
    except FileNotFoundError:
        raise VitbenchError("`dvc` is not on PATH: activate the project's environment "
                            "(`source .venv/bin/activate`) first") from None


def _dvc(args: list[str], root: Path) -> str:
    proc = _run_dvc(args, root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VitbenchError(f"`dvc {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


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
        _dvc(["exp", "run", "--queue", "-S", f"seed={seed}", "-n", f"{EXP_PREFIX}{seed}", *targets],
             root)
    start_queue(root, jobs)
    if wait:
        wait_for_queue(root, timeout, jobs=jobs)


def start_queue(root: Path, jobs: int) -> None:
    """`dvc queue start -j JOBS`. Its workers are daemons that inherit its output: reading that
    through pipes (as `_dvc` does) would block until the last experiment ends, so it goes to a
    file, read back only when the command fails."""
    with tempfile.TemporaryFile("w+") as log:
        code = _run_dvc(["queue", "start", "-j", str(jobs)], root, stdin=subprocess.DEVNULL,
                        stdout=log, stderr=log).returncode
        if code != 0:
            log.seek(0)
            raise VitbenchError(f"`dvc queue start -j {jobs}` failed: {log.read().strip()}")


@dataclass(frozen=True)
class Task:
    """One row of `dvc queue status`."""

    task: str      # short task id
    name: str
    status: str    # Queued, Running, Success or Failed


def queue_tasks(root: Path) -> list[Task]:
    """The rows of `dvc queue status` (queued, running and finished tasks)."""
    rows = []
    for line in _dvc(["queue", "status"], root).splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in QUEUE_STATES and parts[0] != "Task":
            rows.append(Task(parts[0], parts[1], parts[-1]))
    return rows


def wait_for_queue(root: Path, timeout: float, tasks: set[str] | None = None,
                   progress: Callable[[list[Task]], None] | None = None, *, jobs: int = 1,
                   echo: Callable[[str], None] = print) -> list[Task]:
    """Block until none of `tasks` (task ids; default every task) is queued or running, calling
    `progress` with their rows at each poll; a failed one is a VitbenchError naming it.

    Two known faults of DVC's local queue on a loaded machine are ridden out: a `dvc queue
    status` that fails once (a half-written broker message) is polled again, up to
    STATUS_RETRIES times in a row; and a dead worker that leaves tasks queued with none running
    for STALL_POLLS polls is replaced (`dvc queue start -j JOBS` keeps the live ones)."""
    deadline = time.monotonic() + timeout
    failures = stalled = 0
    while True:
        try:
            rows = [t for t in queue_tasks(root) if tasks is None or t.task in tasks]
            failures = 0
        except VitbenchError:
            failures += 1
            if failures > STATUS_RETRIES:
                raise
            time.sleep(POLL_SECONDS)
            continue
        if progress is not None:
            progress(rows)
        if not any(t.status in ("Queued", "Running") for t in rows):
            break
        if time.monotonic() > deadline:
            raise VitbenchError(f"the experiments did not finish within {timeout:.0f} s: "
                                + ", ".join(f"{t.name} {t.status}" for t in rows))
        stalled = stalled + 1 if not any(t.status == "Running" for t in rows) else 0
        if stalled >= STALL_POLLS:
            stalled = 0
            echo("experiments are queued but none runs: restarting the queue's workers")
            start_queue(root, jobs)
        time.sleep(POLL_SECONDS)
    failed = [f"{t.task} {t.name}" for t in rows if t.status == "Failed"]
    if failed:
        raise VitbenchError("experiment(s) failed (see `dvc queue logs NAME`):\n" + "\n".join(failed))
    return rows


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
    for entry, state in _walk(show):
        name = entry.get("name") or ""
        data = entry.get("data") or {}
        if not name.startswith(prefix) or not data.get("metrics") or state not in FINISHED:
            continue
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        if "seed" not in params or int(params["seed"]) in runs:
            continue
        rev = str(entry.get("rev") or "")
        accuracy, kinds = {}, {}
        for model_id, metrics in _model_metrics(data["metrics"]).items():
            accuracy[model_id] = float(metrics["accuracy"])
            kind = with_detail(metrics, root, rev, model_id).get("kind")
            if kind is not None:
                kinds[model_id] = str(kind)
        if accuracy:
            runs[int(params["seed"])] = SeedRun(name, int(params["seed"]), accuracy, kinds, rev)
    return [runs[s] for s in sorted(runs)]


def with_detail(metrics: dict[str, Any], root: Path | None, rev: str,
                model_id: str) -> dict[str, Any]:
    """A model's metrics in an experiment (metrics/<id>.json: numbers only) with what evaluate
    wrote beside them merged in: metrics/<id>_detail.json (display name, kind, meant_pretrained,
    input size, ...) at the experiment's commit `rev`. As they are without `root`, or for an
    experiment from before that file (its metrics/<id>.json held the names)."""
    if root is None or not rev:
        return metrics
    paths = Paths(root)
    path = paths.detail_json(model_id).relative_to(paths.root).as_posix()
    proc = _git_show(root, rev, path)
    if proc.returncode != 0:
        if "kind" in metrics:
            return metrics
        raise VitbenchError(f"{path} of experiment commit {rev[:7]} could not be read: {proc.stderr.strip()}")
    return {**json.loads(proc.stdout), **metrics}


def _git_show(root: Path, rev: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)


def _model_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{model id: its metrics} of every metrics/<id>.json in an experiment that evaluate wrote
    (it has `accuracy`), the contract's ids first, in their order."""
    found = {}
    for path, entry in metrics.items():
        data = (entry or {}).get("data") or {}
        stem = PurePosixPath(path).stem
        if PurePosixPath(path).parent.name == "metrics" and "accuracy" in data:
            found[stem] = data
    order = {m: i for i, m in enumerate(model_ids())}
    return {m: found[m] for m in sorted(found, key=lambda m: (order.get(m, len(order)), m))}


def _walk(node: Any, state: str | None = None) -> list[tuple[dict[str, Any], str | None]]:
    """Every dict with a `data` key, depth first (exp show nests experiments under baselines),
    with the state of the nearest enclosing executor (None where there is none)."""
    found = []
    if isinstance(node, dict):
        executor = node.get("executor")
        if isinstance(executor, dict):
            state = executor.get("state")
        if "data" in node and isinstance(node["data"], dict):
            found.append((node, state))
        for value in node.values():
            if isinstance(value, (dict, list)):
                found += _walk(value, state)
    elif isinstance(node, list):
        for item in node:
            found += _walk(item, state)
    return found


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


def predictions_at(root: Path, rev: str, model_id: str) -> pd.DataFrame:
    """plots/<id>/eval/predictions.csv (actual and predicted class per test image, indexed by
    path) of the experiment at git commit `rev`."""
    path = f"plots/{model_id}/eval/predictions.csv"
    proc = _git_show(root, rev, path)
    if proc.returncode != 0:
        raise VitbenchError(f"{path} of experiment commit {rev[:7]} could not be read: {proc.stderr.strip()}")
    return pd.read_csv(io.StringIO(proc.stdout), dtype={"actual": str, "predicted": str},
                       keep_default_na=False).drop_duplicates("path").set_index("path")


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
    show = json.loads(_dvc(["exp", "show", "--json"], root) or "[]")
    return summarize(experiments(show, prefix, root), root)
