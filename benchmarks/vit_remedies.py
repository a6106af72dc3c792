"""Benchmark: how much each small-dataset remedy of Lee et al. (2021), "Vision Transformer for
Small-Size Datasets", helps the from-scratch ViT on a folder of images: shifted patch tokenization
(`vit.spt`), locality self-attention (`vit.lsa`) and a warm-up cosine schedule (`vit.warmup`).

The pipeline's own stages prepare the data in a scratch project (`common.prepare`, with
`augment.copies: 0`: this measures the architecture and the schedule, not the data), then
`train_vit` + `evaluate` train and test baseline (no SPT, no LSA, constant lr) / +SPT / +LSA /
+warm-up cosine / all three, with the same epochs and seed(s) and `train.patience` = epochs (the
weights of the lowest val_loss are tested). The markdown table goes to stdout and `--out`, with
the settings, the machine and the date. A second (third...) seed runs only if a whole round of
configurations still fits in `--budget-minutes`; the first round always runs in full.

    python benchmarks/vit_remedies.py --data ../shared/datasets/pacs_cartoon --epochs 15
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import PACS, machine_section, prepare, split_counts  # noqa: E402

from vitbench import config  # noqa: E402
from vitbench.errors import ConfigError, VitbenchError  # noqa: E402
from vitbench.fsutil import atomic_file  # noqa: E402
from vitbench.paths import Paths  # noqa: E402

log = logging.getLogger("vitbench.benchmarks.vit_remedies")

DEFAULT_OUT = HERE / "results" / "vit_remedies.md"
VARIANTS = {  # name: (label, SPT, LSA, warm-up cosine: vit.warmup of the steps, else constant lr)
    "baseline": ("baseline", False, False, False),
    "spt": ("+SPT", True, False, False),
    "lsa": ("+LSA", False, True, False),
    "warmup": ("+warm-up cosine", False, False, True),
    "all": ("SPT + LSA + warm-up cosine", True, True, True),
}
FORMATS = {"params": "{:,}", "test acc": "{:.3f}", "test acc (mean)": "{:.3f}",
           "vs baseline": "{:+.3f}", "best val acc": "{:.3f}", "train s": "{:.0f}"}


def params_for(data: Path, seed: int, epochs: int, batch_size: int, image_size: int,
               patch_size: int, layers: int) -> config.Params:
    """params.yaml defaults + the benchmark's settings, validated; a bad value is a usage error."""
    raw = {"seed": seed, "dataset": {"source": str(data)}, "augment": {"copies": 0},
           "train": {"epochs": epochs, "batch_size": batch_size, "patience": epochs,
                     "mixed_precision": False},  # no early stop; the lowest val_loss is restored
           "vit": {"image_size": image_size, "patch_size": patch_size, "layers": layers},
           "evaluate": {"batch_size": batch_size, "attention_samples": 0, "robustness": False}}
    try:
        return config.params_from_dict(raw)
    except ConfigError as exc:
        raise click.BadParameter(f"{exc.key} = {exc.value!r}: expected {exc.allowed}") from None


def train_one(name: str, seed: int, params: config.Params, paths: Paths) -> dict[str, Any]:
    """The train_vit and evaluate stages on one configuration: a row of the every-run table."""
    from vitbench.evaluation import evaluate
    from vitbench.fsutil import read_json
    from vitbench.training import train_vit

    label, spt, lsa, warm = VARIANTS[name]
    vit = dataclasses.replace(params.vit, spt=spt, lsa=lsa, warmup=params.vit.warmup if warm else 0.0)
    train_vit(vit, params.train, seed, paths)
    accuracy = evaluate("vit_scratch", params.evaluate, seed, paths)["accuracy"]
    print(f"{label} seed {seed}: test accuracy {accuracy:.3f}", flush=True)
    record = read_json(paths.model("vit_scratch") / "record.json")
    return {"name": name, "config": label, "seed": seed, "test acc": float(accuracy),
            "best val acc": float(max(record["history"].get("val_accuracy", [float("nan")]))),
            "best epoch (val_loss)": int(record["best_epoch"]), "epochs": int(record["epochs_run"]),
            "train s": float(record["train_seconds"]), "params": int(record["params_total"])}


def run_benchmark(params: config.Params, settings: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Prepare the split in `workdir`, then one round of every config per seed while the budget
    allows (the first round always runs in full)."""
    from vitbench.data.manifest import read_labels, read_manifest

    start, load_start = time.perf_counter(), os.getloadavg()
    paths = prepare(params, workdir / "project", settings["max_per_class"])
    report = {"params": params, "settings": settings, "classes": read_labels(paths.labels),
              "counts": split_counts(paths), "load_seconds": time.perf_counter() - start,
              "majority": float(read_manifest(paths.split_csv("test"))["class"]
                                .value_counts(normalize=True).max())}
    runs: list[dict[str, Any]] = []
    seeds_run: list[int] = []
    budget, longest_round = settings["budget_minutes"] * 60, 0.0
    for seed in settings["seeds"]:
        elapsed = time.perf_counter() - start
        if seeds_run and elapsed + longest_round > budget:
            log.warning("stopping before seed %d: %.0fs used, a round takes ~%.0fs, budget %.0fs",
                        seed, elapsed, longest_round, budget)
            break
        round_start = time.perf_counter()
        runs += [train_one(name, seed, params, paths) for name in settings["configs"]]
        seeds_run.append(seed)
        longest_round = max(longest_round, time.perf_counter() - round_start)
    return {**report, "runs": pd.DataFrame(runs), "seeds_run": seeds_run,
            "wall_seconds": time.perf_counter() - start, "load": (load_start, os.getloadavg())}


# --- the report ----------------------------------------------------------------------------------

def markdown(table: pd.DataFrame) -> str:
    """`table` as markdown, the numbers formatted by FORMATS and right-aligned."""
    shown = table.assign(**{c: table[c].map(f.format) for c, f in FORMATS.items() if c in table})
    align = ["right" if pd.api.types.is_numeric_dtype(table[c]) else "left" for c in table]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def summary_table(report: dict[str, Any]) -> str:
    """One row per config: mean test accuracy (with several seeds, each seed's too), the gain over
    the baseline, the mean best val accuracy and train seconds; as markdown."""
    runs, warmup, several = report["runs"], report["params"].vit.warmup, len(report["seeds_run"]) > 1
    mean = runs.groupby("name", sort=False)["test acc"].mean()
    rows = []
    for name, group in runs.groupby("name", sort=False):
        label, spt, lsa, warm = VARIANTS[name]
        accuracy = ({"test acc (mean)": mean[name], "test acc per seed": ", ".join(
            f"{a:.3f}" for a in group["test acc"])} if several else {"test acc": mean[name]})
        rows.append({"config": label, "SPT": "yes" if spt else "-", "LSA": "yes" if lsa else "-",
                     "lr schedule": f"warm-up {warmup:g} + cosine" if warm else "constant",
                     "params": group["params"].iloc[0], **accuracy,
                     "vs baseline": mean[name] - mean.get("baseline", np.nan),
                     "best val acc": group["best val acc"].mean(), "train s": group["train s"].mean()})
    return markdown(pd.DataFrame(rows))


def render(report: dict[str, Any]) -> str:
    """The results file: settings, machine, date, both tables."""
    s, params, counts, classes = report["settings"], report["params"], report["counts"], report["classes"]
    v, several = params.vit, len(report["seeds_run"]) > 1
    mean = report["runs"].groupby("config", sort=False)["test acc"].mean()
    best, acc, chance, majority = mean.idxmax(), mean.max(), 1 / len(classes), report["majority"]
    stderr = float(np.sqrt(acc * (1 - acc) / counts["test"]))
    seeds = ", ".join(map(str, report["seeds_run"]))
    skipped = ", ".join(str(x) for x in s["seeds"] if x not in report["seeds_run"])
    settings = [
        f"- data: `{s['data']}`, {len(classes)} classes ({', '.join(classes)}); the pipeline's "
        f"clean and split stages (seed {params.seed}): "
        + ", ".join(f"{split} {n}" for split, n in counts.items())
        + (f" (at most {s['max_per_class']} images per class)" if s["max_per_class"] else ""),
        f"- images {v.image_size}px, patch {v.patch_size} ({v.num_patches} tokens), projection_dim "
        f"{v.projection_dim}, {v.layers} layers, {v.num_heads} heads, mlp_head "
        f"{list(v.mlp_head)}, dropout {v.dropout}; no augmentation",
        f"- AdamW lr {v.lr:g}, weight decay {v.weight_decay:g}, batch {params.train.batch_size}, "
        f"{params.train.epochs} epochs; warm-up cosine: linear warm-up over {v.warmup:g} of the "
        "steps, then cosine to 0 (`vitbench.optim.learning_rate`)",
        f"- seeds run: {seeds}" + (f"; not run (budget): {skipped}" if skipped else ""),
        f"- budget {s['budget_minutes']:g} min; used {report['wall_seconds'] / 60:.1f} min wall "
        f"time (fetch, clean, split, augment: {report['load_seconds']:.0f}s)"]
    return "\n\n".join([
        "# From-scratch ViT: small-dataset remedies (Lee et al. 2021)",
        f"Generated by `benchmarks/vit_remedies.py` on {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        "## Result", summary_table(report),
        f"Chance is {chance:.3f} (1/{len(classes)}); always predicting the majority class "
        f"scores {majority:.3f} on this test set. Best: **{best}** with {acc:.3f} test accuracy "
        f"({acc - majority:+.3f} over the majority class, {acc - mean.get('baseline', np.nan):+.3f} "
        "over the baseline).",
        f"Resolution: with {counts['test']} test images, one run's accuracy near {acc:.2f} has a "
        f"binomial standard error of {stderr:.3f}, so differences below about {2 * stderr:.2f} "
        "between single runs are within noise; the spread between seeds shows the training noise "
        "on top.",
        "Test accuracy is that of the weights with the lowest validation loss (the pipeline's "
        "`train_vit` with train.patience = epochs, then `evaluate`); "
        + (f"the mean over seeds {seeds}; " if several else "")
        + "'best val acc' is the highest validation accuracy of any epoch; 'train s' is the wall "
        "time of the training epochs including validation.",
        "## Settings", "\n".join(settings),
        "\n".join(machine_section(*report["load"])),
        "## Every run", markdown(report["runs"].drop(columns="name")),
    ]) + "\n"


# --- command line --------------------------------------------------------------------------------

def _configs(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise click.BadParameter(f"unknown config(s) {', '.join(unknown) or '(none)'}; "
                                 f"expected a comma-separated list of {', '.join(VARIANTS)}")
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--data", type=click.Path(path_type=Path), default=PACS,
              help="Folder with one sub-folder of images per class.")
@click.option("--epochs", type=click.IntRange(min=1), default=15)
@click.option("--image-size", type=click.IntRange(min=8), default=config.Vit.image_size)
@click.option("--patch-size", type=click.IntRange(min=1), default=config.Vit.patch_size)
@click.option("--layers", type=click.IntRange(min=1), default=config.Vit.layers,
              help="Transformer blocks.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32)
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=2,
              help="Rounds of every config, seeds --seed, --seed+1, ... (budget permitting).")
@click.option("--seed", type=click.IntRange(min=0), default=42,
              help="First training seed; also the split seed.")
@click.option("--configs", default=",".join(VARIANTS), help="Comma-separated configs to run.")
@click.option("--max-per-class", type=click.IntRange(min=3), default=None,
              help="Use at most this many images per class (quick runs).")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=25.0,
              help="Start another seed round only if it fits.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_OUT,
              help="Markdown results file (written atomically).")
def main(data: Path, epochs: int, image_size: int, patch_size: int, layers: int, batch_size: int,
         n_seeds: int, seed: int, configs: str, max_per_class: int | None, budget_minutes: float,
         out: Path) -> None:
    """Train the from-scratch ViT with and without each small-dataset remedy; write a table."""
    from vitbench.stage import setup_logging

    setup_logging()
    params = params_for(data, seed, epochs, batch_size, image_size, patch_size, layers)
    settings = {"data": data, "seeds": tuple(range(seed, seed + n_seeds)), "configs": _configs(configs),
                "max_per_class": max_per_class, "budget_minutes": budget_minutes}
    try:
        with tempfile.TemporaryDirectory(prefix="vit_remedies-") as workdir:
            report = run_benchmark(params, settings, Path(workdir))
    except VitbenchError as exc:
        click.secho(f"error: vit_remedies: {exc}", fg="red", err=True)
        sys.exit(1)
    with atomic_file(out) as fh:
        fh.write(render(report))
    click.echo("\n" + summary_table(report))
    click.echo(f"\nwrote {out} ({report['wall_seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
