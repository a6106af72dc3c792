"""Benchmark: how much each small-dataset remedy of Lee et al. (2021), "Vision Transformer for
Small-Size Datasets", helps the from-scratch ViT on a folder of images: shifted patch tokenization
(`vit.spt`), locality self-attention (`vit.lsa`) and a warm-up cosine schedule (`vit.warmup`).

Params are params.yaml's, read as the stages read them (`common.pipeline_params`), plus the
overrides `overrides()` states: the data folder, the seed, `augment.copies: 0` (no materialised
copies; the online augmentation of params.yaml stays), the epochs with `train.patience` = epochs
(the weights of the lowest val_loss are tested), the options given (image, patch, layers, batch)
and each configuration's `vit.spt`, `vit.lsa` and `vit.warmup` (0 = constant lr, else
params.yaml's). The pipeline's own stage scripts prepare the data in a scratch project
(`common.prepare`), then the `train_vit` and `evaluate` stage scripts train and test baseline (no
SPT, no LSA, constant lr) / +SPT / +LSA / +warm-up cosine / all three, with the same epochs and
seed(s) (`common.train_and_evaluate`). The markdown table goes to stdout and `--out`, with
the settings, the machine and the date. A second (third...) seed runs only if a whole round of
configurations still fits in `--budget-minutes`; the first round always runs in full.

    python benchmarks/vit_remedies.py --data ../shared/datasets/pacs_cartoon --epochs 15
"""

from __future__ import annotations

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
from common import (PACS, machine_section, pipeline_params, pipeline_raw, prepare,  # noqa: E402
                    split_counts, train_and_evaluate, used_params)

from vitbench.core import config  # noqa: E402
from vitbench.core.errors import ConfigError, VitbenchError  # noqa: E402
from vitbench.core.fsutil import atomic_file  # noqa: E402
from vitbench.core.paths import Paths  # noqa: E402

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


def overrides(data: Path | str, seed: int, epochs: int, options: dict[str, int | None],
              variant: str | None = None) -> dict[str, Any]:
    """What this benchmark changes in params.yaml: its settings, the options given (image_size,
    patch_size, layers, batch_size; None = params.yaml's) and `variant`'s remedies."""
    vit = {"tokenizer": "patch",   # the remedies are the patch ViT's (params.yaml: conv tokens)
           **{k: v for k, v in options.items() if k != "batch_size" and v is not None}}
    batch = {"batch_size": options["batch_size"]} if options.get("batch_size") is not None else {}
    out: dict[str, Any] = {
        "seed": seed, "dataset": {"source": str(data)}, "augment": {"copies": 0},
        "train": {"epochs": epochs, "patience": epochs, "mixed_precision": False, **batch},
        "vit": vit, "evaluate": {"attention_samples": 0, "robustness": False, **batch}}
    if variant is not None:
        _, spt, lsa, warm = VARIANTS[variant]
        warmup = pipeline_raw(out)["vit"]["warmup"] if warm else 0.0
        out["vit"] = {**vit, "spt": spt, "lsa": lsa, "warmup": warmup}
    return out


def params_for(changes: dict[str, Any]) -> config.Params:
    """params.yaml + `changes`, validated as a stage validates them; a bad value is a usage error."""
    try:
        return pipeline_params(changes)
    except ConfigError as exc:
        raise click.BadParameter(f"{exc.key} = {exc.value!r}: expected {exc.allowed}") from None


def train_one(name: str, seed: int, settings: dict[str, Any], paths: Paths) -> dict[str, Any]:
    """The train_vit and evaluate stage scripts on one configuration: a row of the every-run table
    (the params the stage read are kept in `settings["used"][name]`)."""
    from vitbench.core.fsutil import read_json

    label = VARIANTS[name][0]
    params = params_for(overrides(settings["data"], seed, settings["epochs"], settings["options"], name))
    accuracy = train_and_evaluate("vit", params, paths)["vit_scratch"]["accuracy"]
    settings.setdefault("used", {})[name] = used_params(paths)
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
        runs += [train_one(name, seed, settings, paths) for name in settings["configs"]]
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
        f"{list(v.mlp_head)}, dropout {v.dropout}, tokenizer {v.tokenizer}, sequence pooling "
        f"{'on' if v.seq_pool else 'off'}, drop path {v.drop_path:g}; no materialised copies; "
        "online augmentation: " + (", ".join(f"{k} {val:g}" if not isinstance(val, bool) else k
                                             for k, val in params.augment_online.active.items())
                                    or "none") + " (params.yaml)",
        f"- AdamW lr {v.lr:g}, weight decay {v.weight_decay:g}, label smoothing "
        f"{v.label_smoothing:g}, batch {params.train.batch_size}, "
        f"{params.train.epochs} epochs; warm-up cosine: linear warm-up over {v.warmup:g} of the "
        "steps, then cosine to 0 (`vitbench.train.optim.learning_rate`)",
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
@click.option("--image-size", type=click.IntRange(min=8), default=None,
              help="vit.image_size [default: params.yaml's]")
@click.option("--patch-size", type=click.IntRange(min=1), default=None,
              help="vit.patch_size [default: params.yaml's]")
@click.option("--layers", type=click.IntRange(min=1), default=None,
              help="Transformer blocks (vit.layers) [default: params.yaml's]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="train.batch_size and evaluate.batch_size [default: params.yaml's]")
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
def main(data: Path, epochs: int, image_size: int | None, patch_size: int | None,
         layers: int | None, batch_size: int | None, n_seeds: int, seed: int, configs: str,
         max_per_class: int | None, budget_minutes: float, out: Path) -> None:
    """Train the from-scratch ViT with and without each small-dataset remedy; write a table."""
    from vitbench.core.stage import setup_logging

    setup_logging()
    options = {"image_size": image_size, "patch_size": patch_size, "layers": layers,
               "batch_size": batch_size}
    params = params_for(overrides(data, seed, epochs, options))
    settings = {"data": data, "seeds": tuple(range(seed, seed + n_seeds)), "configs": _configs(configs),
                "max_per_class": max_per_class, "budget_minutes": budget_minutes, "epochs": epochs,
                "options": options}
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
