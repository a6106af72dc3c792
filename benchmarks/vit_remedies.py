"""Benchmark: how much each small-dataset remedy helps the from-scratch ViT on a folder of images.

Lee et al. (2021), "Vision Transformer for Small-Size Datasets", add shifted patch tokenization
(`vit.spt`), locality self-attention (`vit.lsa`) and a warm-up cosine schedule (`vit.warmup`).
This script runs the pipeline's own stages in a scratch project: fetch (the folder), clean, split
(seeded, stratified, leakage-checked), augment with `copies: 0` (no augmentation: this measures the
architecture and the schedule, not the data), then `train_vit` + `evaluate` five times:

    baseline (no SPT, no LSA, constant lr) / +SPT / +LSA / +warm-up cosine / all three

every configuration with the same epochs and seed(s) and `train.patience` = epochs (no early stop;
the weights with the lowest val_loss are restored and tested, as in the pipeline). It reports test
accuracy, best validation accuracy, train seconds and parameters as a markdown table (stdout and
`--out`, with the settings, the machine and the date).

A second (third...) seed is trained only if a whole round of configurations still fits in
`--budget-minutes`; the first round always runs in full.

    python benchmarks/vit_remedies.py --data ../shared/datasets/pacs_cartoon --epochs 15
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from vitbench import config
from vitbench.errors import ConfigError, DataError, VitbenchError
from vitbench.fsutil import atomic_file
from vitbench.paths import Paths

log = logging.getLogger("vitbench.benchmarks.vit_remedies")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "pacs_cartoon"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "vit_remedies.md"


@dataclass(frozen=True)
class Variant:
    """One configuration of the remedies."""

    name: str
    label: str
    spt: bool
    lsa: bool
    warmup: float  # fraction of steps; 0 = constant learning rate


def make_variants(warmup: float) -> dict[str, Variant]:
    """The five configurations, by name; the schedule ones warm up `warmup` of the steps."""
    return {v.name: v for v in (
        Variant("baseline", "baseline", False, False, 0.0),
        Variant("spt", "+SPT", True, False, 0.0),
        Variant("lsa", "+LSA", False, True, 0.0),
        Variant("warmup", "+warm-up cosine", False, False, warmup),
        Variant("all", "SPT + LSA + warm-up cosine", True, True, warmup),
    )}


VARIANT_NAMES = tuple(make_variants(0.1))


@dataclass(frozen=True)
class Settings:
    """Everything a benchmark run depends on."""

    data: Path
    vit: config.Vit  # architecture, lr, weight decay, warm-up fraction (spt/lsa set per variant)
    epochs: int
    batch_size: int
    seeds: tuple[int, ...]
    split_seed: int
    val: float
    test: float
    max_per_class: int | None
    variants: tuple[str, ...]
    budget_minutes: float


@dataclass(frozen=True)
class Data:
    """The split the runs share: class names and images per split."""

    classes: list[str]
    counts: dict[str, int]
    test_labels: np.ndarray

    def count(self, split: str) -> int:
        return int(self.counts[split])


@dataclass(frozen=True)
class RunResult:
    """One trained configuration."""

    variant: str
    seed: int
    test_accuracy: float
    best_val_accuracy: float
    best_epoch: int  # 1-based; its weights (lowest val_loss) are the ones tested
    epochs_run: int
    train_seconds: float
    params: int


@dataclass(frozen=True)
class Report:
    """What run_benchmark did."""

    settings: Settings
    data: Data
    results: list[RunResult]
    seeds_run: tuple[int, ...]
    load_seconds: float
    wall_seconds: float
    load_average: tuple[tuple[float, float, float], tuple[float, float, float]]  # start, end


# --- the pipeline's stages in a scratch project ----------------------------------------------------

def prepare_data(settings: Settings, paths: Paths) -> Data:
    """fetch -> clean -> (at most --max-per-class per class) -> split -> augment (no copies)."""
    from vitbench.data.augmentation import augment_dataset
    from vitbench.data.cleaning import clean_dataset
    from vitbench.data.manifest import read_labels, read_manifest, write_manifest
    from vitbench.data.sources import fetch_dataset
    from vitbench.data.splitting import SPLITS, split_dataset

    if not settings.data.is_dir():
        raise DataError(f"dataset folder {settings.data} does not exist (pass --data)")
    fetch_dataset(config.Dataset(source=str(settings.data)), settings.split_seed, paths)
    clean_dataset(config.Clean(), paths)
    if settings.max_per_class is not None:  # quick runs: a seeded subset of each class
        df = read_manifest(paths.clean_manifest)
        subset = df.sample(frac=1.0, random_state=settings.split_seed).groupby("class").head(
            settings.max_per_class)
        write_manifest(subset.sort_index(), paths.clean_manifest)
    split_dataset(config.Split(val=settings.val, test=settings.test), settings.split_seed, paths)
    augment_dataset(config.Augment(copies=0), settings.split_seed, paths)
    classes = read_labels(paths.labels)
    frames = {split: read_manifest(paths.split_csv(split)) for split in SPLITS}
    test = np.array([classes.index(c) for c in frames["test"]["class"]])
    return Data(classes, {split: len(df) for split, df in frames.items()}, test)


def train_one(variant: Variant, seed: int, settings: Settings, paths: Paths) -> RunResult:
    """The train_vit and evaluate stages on one configuration."""
    from vitbench.evaluation import evaluate
    from vitbench.fsutil import read_json
    from vitbench.training import train_vit

    cfg = dataclasses.replace(settings.vit, spt=variant.spt, lsa=variant.lsa, warmup=variant.warmup)
    train = config.Train(epochs=settings.epochs, batch_size=settings.batch_size,
                         patience=settings.epochs, mixed_precision=False)
    log.info("%s, seed %d", variant.label, seed)
    train_vit(cfg, train, seed, paths)
    metrics = evaluate("vit_scratch", config.Evaluate(batch_size=settings.batch_size, attention_samples=0,
                                                      robustness=False), seed, paths)
    record = read_json(paths.model("vit_scratch") / "record.json")
    return RunResult(variant.name, seed, float(metrics["accuracy"]),
                     float(max(record["history"].get("val_accuracy", [float("nan")]))),
                     int(record["best_epoch"]), int(record["epochs_run"]),
                     float(record["train_seconds"]), int(record["params_total"]))


def run_benchmark(settings: Settings, workdir: Path) -> Report:
    """Prepare the split in `workdir`, then one round of every variant per seed while the budget allows."""
    start = time.perf_counter()
    load_start = os.getloadavg()
    paths = Paths(workdir)
    data = prepare_data(settings, paths)
    load_seconds = time.perf_counter() - start
    log.info("split of %s: train %d, val %d, test %d, %d classes (prepared in %.1fs)", settings.data,
             data.count("train"), data.count("val"), data.count("test"), len(data.classes),
             load_seconds)
    variants = make_variants(settings.vit.warmup)
    results: list[RunResult] = []
    seeds_run: list[int] = []
    budget, longest_round = settings.budget_minutes * 60, 0.0
    for seed in settings.seeds:
        elapsed = time.perf_counter() - start
        if seeds_run and elapsed + longest_round > budget:
            log.warning("stopping before seed %d: %.0fs used, a round takes ~%.0fs, budget %.0fs",
                        seed, elapsed, longest_round, budget)
            break
        round_start = time.perf_counter()
        for name in settings.variants:
            results.append(train_one(variants[name], seed, settings, paths))
            print(f"{variants[name].label} seed {seed}: test accuracy "
                  f"{results[-1].test_accuracy:.3f}", flush=True)
        seeds_run.append(seed)
        longest_round = max(longest_round, time.perf_counter() - round_start)
    return Report(settings, data, results, tuple(seeds_run), load_seconds,
                  time.perf_counter() - start, (load_start, os.getloadavg()))


# --- the report ----------------------------------------------------------------------------------

def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summary_rows(report: Report) -> list[dict[str, object]]:
    """One row per variant: mean test accuracy (and each seed's), the gain over the baseline..."""
    variants = make_variants(report.settings.vit.warmup)
    by_name = {n: [r for r in report.results if r.variant == n] for n in report.settings.variants}
    base = by_name.get("baseline")
    rows = []
    for name, runs in by_name.items():
        v, test = variants[name], [r.test_accuracy for r in runs]
        rows.append({
            "config": v.label, "spt": v.spt, "lsa": v.lsa,
            "schedule": f"warm-up {v.warmup:g} + cosine" if v.warmup else "constant",
            "params": runs[0].params if runs else 0,
            "test_mean": _mean(test), "test_runs": test,
            "gain": _mean(test) - _mean([r.test_accuracy for r in base]) if base else float("nan"),
            "val_mean": _mean([r.best_val_accuracy for r in runs]),
            "seconds_mean": _mean([r.train_seconds for r in runs]),
        })
    return rows


def summary_table(report: Report) -> str:
    """The markdown table of `summary_rows`."""
    several = len(report.seeds_run) > 1
    head = ["config", "SPT", "LSA", "lr schedule", "params",
            "test acc (mean)" if several else "test acc", *(["test acc per seed"] if several else []),
            "vs baseline", "best val acc", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary_rows(report):
        cells = [row["config"], _yes(row["spt"]), _yes(row["lsa"]), row["schedule"],
                 f"{row['params']:,}", f"{row['test_mean']:.3f}",
                 *([", ".join(f"{a:.3f}" for a in row["test_runs"])] if several else []),
                 f"{row['gain']:+.3f}", f"{row['val_mean']:.3f}", f"{row['seconds_mean']:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def runs_table(report: Report) -> str:
    """Every run: one markdown row per (variant, seed)."""
    labels = {n: v.label for n, v in make_variants(report.settings.vit.warmup).items()}
    lines = ["| config | seed | test acc | best val acc | best epoch (val_loss) | epochs | train s | params |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report.results:
        lines.append(f"| {labels[r.variant]} | {r.seed} | {r.test_accuracy:.3f} | "
                     f"{r.best_val_accuracy:.3f} | {r.best_epoch} | {r.epochs_run} | "
                     f"{r.train_seconds:.0f} | {r.params:,} |")
    return "\n".join(lines)


def _yes(flag: object) -> str:
    return "yes" if flag else "-"


def machine_info() -> dict[str, str]:
    """CPU count and model, Python, TensorFlow and Keras versions."""
    import keras
    import tensorflow as tf

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpu": "yes" if tf.config.list_physical_devices("GPU") else "none"}


def baselines(data: Data) -> tuple[float, float]:
    """(chance = 1 / classes, accuracy of always predicting the test set's majority class)."""
    counts = np.bincount(data.test_labels, minlength=len(data.classes))
    return 1 / len(data.classes), float(counts.max() / counts.sum())


def render(report: Report) -> str:
    """The results file: settings, machine, date, both tables."""
    s, v, data = report.settings, report.settings.vit, report.data
    chance, majority = baselines(data)
    rows = summary_rows(report)
    best = max(rows, key=lambda r: r["test_mean"])
    stderr = float(np.sqrt(best["test_mean"] * (1 - best["test_mean"]) / data.count("test")))
    info = machine_info()
    load0, load1 = report.load_average
    seeds = ", ".join(map(str, report.seeds_run))
    skipped = [x for x in s.seeds if x not in report.seeds_run]
    return "\n".join([
        "# From-scratch ViT: small-dataset remedies (Lee et al. 2021)",
        "",
        f"Generated by `benchmarks/vit_remedies.py` on {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        "",
        "## Result",
        "",
        summary_table(report),
        "",
        f"Chance is {chance:.3f} (1/{len(data.classes)}); always predicting the majority class "
        f"scores {majority:.3f} on this test set. Best: **{best['config']}** with "
        f"{best['test_mean']:.3f} test accuracy ({best['test_mean'] - majority:+.3f} over the "
        f"majority class, {best['gain']:+.3f} over the baseline).",
        "",
        f"Resolution: with {data.count('test')} test images, one run's accuracy near "
        f"{best['test_mean']:.2f} has a binomial standard error of {stderr:.3f}, so differences "
        f"below about {2 * stderr:.2f} between single runs are within noise; the spread between "
        "seeds shows the training noise on top.",
        "",
        "Test accuracy is that of the weights with the lowest validation loss (the pipeline's "
        "`train_vit` with train.patience = epochs, then `evaluate`); "
        f"{'the mean over seeds ' + seeds + '; ' if len(report.seeds_run) > 1 else ''}"
        f"'best val acc' is the highest validation accuracy of any epoch; 'train s' is the wall "
        "time of the training epochs including validation.",
        "",
        "## Settings",
        "",
        f"- data: `{s.data}`, {len(data.classes)} classes ({', '.join(data.classes)}); the "
        f"pipeline's clean and split stages (seed {s.split_seed}): train "
        f"{data.count('train')}, val {data.count('val')}, test {data.count('test')}"
        + (f" (at most {s.max_per_class} images per class)" if s.max_per_class else ""),
        f"- images {v.image_size}px, patch {v.patch_size} ({v.num_patches} tokens), projection_dim "
        f"{v.projection_dim}, {v.layers} layers, {v.num_heads} heads, mlp_head "
        f"{list(v.mlp_head)}, dropout {v.dropout}; no augmentation",
        f"- AdamW lr {v.lr:g}, weight decay {v.weight_decay:g}, batch {s.batch_size}, "
        f"{s.epochs} epochs; warm-up cosine: linear warm-up over {v.warmup:g} of the steps, then "
        "cosine to 0 (`vitbench.training.learning_rate`)",
        f"- seeds run: {seeds}" + (f"; not run (budget): {', '.join(map(str, skipped))}" if skipped else ""),
        f"- budget {s.budget_minutes:g} min; used {report.wall_seconds / 60:.1f} min wall time "
        f"(fetch, clean, split, augment: {report.load_seconds:.0f}s)",
        "",
        "## Machine",
        "",
        f"- {info['nproc']} CPU(s), {info['cpu']}, GPU: {info['gpu']}",
        f"- Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}",
        f"- load average (1/5/15 min) at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, at end "
        f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}: the machine was shared with other jobs, "
        "so the seconds are indicative only",
        "",
        "## Every run",
        "",
        runs_table(report),
        "",
    ])


# --- command line --------------------------------------------------------------------------------

def _vit(image_size: int, patch_size: int, layers: int) -> config.Vit:
    """The params.yaml defaults of `vit`, with the size options; a bad combination is a usage error."""
    cfg = config.Vit(image_size=image_size, patch_size=patch_size, layers=layers)
    try:
        cfg.validate("vit")
    except ConfigError as exc:
        raise click.BadParameter(f"{exc.key} = {exc.value!r}: expected {exc.allowed}") from None
    return cfg


def _variants(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown or not names:
        raise click.BadParameter(f"unknown config(s) {', '.join(unknown) or '(none)'}; "
                                 f"expected a comma-separated list of {', '.join(VARIANT_NAMES)}")
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True,
              help="Folder with one sub-folder of images per class.")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--image-size", type=click.IntRange(min=8), default=config.Vit.image_size,
              show_default=True)
@click.option("--patch-size", type=click.IntRange(min=1), default=config.Vit.patch_size,
              show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=config.Vit.layers, show_default=True,
              help="Transformer blocks.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=2, show_default=True,
              help="Rounds of every config, seeds --seed, --seed+1, ... (budget permitting).")
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True,
              help="First training seed; also the split seed.")
@click.option("--configs", default=",".join(VARIANT_NAMES), show_default=True,
              help="Comma-separated configs to run.")
@click.option("--max-per-class", type=click.IntRange(min=3), default=None,
              help="Use at most this many images per class (quick runs).")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=25.0,
              show_default=True, help="Start another seed round only if it fits.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_OUT,
              show_default=True, help="Markdown results file (written atomically).")
def main(data: Path, epochs: int, image_size: int, patch_size: int, layers: int, batch_size: int,
         n_seeds: int, seed: int, configs: str, max_per_class: int | None, budget_minutes: float, out: Path) -> None:
    """Train the from-scratch ViT with and without each small-dataset remedy; write a table."""
    from vitbench.stage import setup_logging

    setup_logging()
    settings = Settings(data=data, vit=_vit(image_size, patch_size, layers), epochs=epochs,
                        batch_size=batch_size, seeds=tuple(range(seed, seed + n_seeds)),
                        split_seed=seed, val=0.15, test=0.15, max_per_class=max_per_class,
                        variants=_variants(configs), budget_minutes=budget_minutes)
    try:
        with tempfile.TemporaryDirectory(prefix="vit_remedies-") as workdir:
            report = run_benchmark(settings, Path(workdir))
    except VitbenchError as exc:
        click.secho(f"error: vit_remedies: {exc}", fg="red", err=True)
        sys.exit(1)
    text = render(report)
    with atomic_file(out) as fh:
        fh.write(text)
    click.echo("\n" + summary_table(report))
    click.echo(f"\nwrote {out} ({report.wall_seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
