"""Benchmark: the current training recipe against the new one, for the from-scratch ViT and the
from-scratch CNN (MobileNetV2, `cnn.pretrained: false`), at one fixed budget per model.

Every run goes through the package: the pipeline's own stages prepare the data once in a scratch
project (fetch the folder, clean, split, augment with no materialised copies: `common.prepare`),
the training batches come from `training.load_train_data` (the real tf.data pipeline, with the
online augmentation of `augment_online` on the training batches only), the models from the
family registry (`registry.Family.build_kwargs`, `.builder`, `.prepare_phase`, `.recipe`), the
recipe from `optim.make_optimizer` and `optim.compile_model`, and the loop is
`loop.fit_phase` (no early stopping, the weights of the lowest validation loss restored and
tested). The CNN trains its whole network from scratch as `train_cnn`'s first phase does without
weights (`registry.train_base_from_scratch`).

    current: the params.yaml defaults (no online augmentation, no label smoothing; the ViT with
             SPT + LSA, AdamW 1e-4 decay, warm-up cosine; the CNN with Adam at a constant lr)
    new:     RECIPES["new"]: online augmentation for both, label smoothing, AdamW + warm-up cosine
             for both; the ViT keeps SPT + LSA and adds sequence pooling, stochastic depth and
             stronger weight decay
    new+conv (ViT only): the same with the convolutional (CCT) tokenizer instead of SPT

The split is the project's (stratified, seeded 42, near-duplicates kept in one split,
`vitbench.data.splitting`) on a folder of class folders. Each run has `--epochs` and stops early
only at `--minutes` of wall time (checked after each epoch).

    python benchmarks/recipe.py --data ../shared/datasets/pacs_cartoon --epochs 20 \
        --epochs-of cnn/new=36 --seeds 42 --seeds 43
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
import keras

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PACS, machine_section, prepare, split_counts  # noqa: E402

from vitbench import config, loop, optim, training  # noqa: E402
from vitbench.data.pipeline import dataset_from_manifest  # noqa: E402
from vitbench.fsutil import atomic_file  # noqa: E402
from vitbench.models import registry  # noqa: E402
from vitbench.paths import Paths  # noqa: E402
from vitbench.recipe import recipe_record  # noqa: E402

log = logging.getLogger("vitbench.benchmarks.recipe")

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "recipe.md"
FAMILIES = {"vit_scratch": "ViT from scratch", "cnn": "MobileNetV2 from scratch"}
SPLIT_SEED = 42
PHASE = {"weight_decay": 0.01, "warmup": 0.1, "label_smoothing": 0.1}
ONLINE = {"flip": True, "translate": 0.1, "zoom": 0.1, "contrast": 0.2}
VIT_NEW = {"spt": True, "lsa": True, "seq_pool": True, "drop_path": 0.1, "weight_decay": 0.05,
           "label_smoothing": 0.1, "mlp_head": [128]}
RECIPES: dict[str, dict[str, Any]] = {
    "current": {},
    "new": {"augment_online": ONLINE, "vit": VIT_NEW, "cnn": {"transfer": {"lr": 1e-3, **PHASE}}},
    # the same with the Compact Convolutional Transformer tokenizer (a ViT-only variant)
    "new+conv": {"augment_online": ONLINE,
                 "vit": {**VIT_NEW, "tokenizer": "conv", "conv_layers": 3, "spt": False}},
}
ONLY = {"new+conv": ("vit_scratch",)}  # recipes that apply to some families only


def params_for(recipe: str, image_size: int, seed: int, extra: dict[str, Any]) -> config.Params:
    """params.yaml defaults + the recipe's keys + `extra`, at `image_size`, validated."""
    raw: dict[str, Any] = {"seed": seed, "augment": {"copies": 0},  # no materialised copies here
                           "cnn": {"pretrained": False, "image_size": image_size},
                           "vit": {"image_size": image_size, "patch_size": image_size // 8}}
    for overrides in (RECIPES[recipe], extra):
        for section, values in overrides.items():
            raw[section] = {**raw.get(section, {}), **values}
    return config.params_from_dict(raw)


class TimeLimit(keras.callbacks.Callback):
    """Stop after the epoch during which `seconds` of training went by."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.start = seconds, 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def run_one(family: str, recipe: str, seed: int, paths: Paths, image_size: int, epochs: int,
            minutes: float) -> dict[str, Any]:
    """Train one family's first phase with one recipe and seed on the prepared split in `paths`
    (random weights); its test accuracy and what it took."""
    params = params_for(recipe, image_size, seed, {})
    fam = registry.family(family)
    cfg, phase_name = getattr(params, fam.section), registry.models_of(family)[0].phase
    phase = fam.recipe(cfg, phase_name)
    size, preprocess = fam.input_spec(cfg)
    keras.utils.set_random_seed(seed)
    data = training.load_train_data(params.train, seed, paths, size, preprocess,
                                    params.augment_online)
    test_ds = dataset_from_manifest(paths.split_csv("test"), data.classes, size, preprocess,
                                    data.batch_size)
    build = fam.build_kwargs(cfg, len(data.classes))
    model = fam.builder(**build)
    fam.prepare_phase(model, phase_name, pretrained=False)  # the CNN: its whole base trains
    optimizer = optim.make_optimizer(phase, epochs * data.steps_per_epoch)
    optim.compile_model(model, optimizer, len(data.classes), phase.label_smoothing)
    with tempfile.TemporaryDirectory(prefix="recipe-") as backup:
        result = loop.fit_phase(model, data.train, data.val, epochs=epochs,
                                    patience=epochs, backup_dir=Path(backup) / "fit",
                                    curves_dir=None, callbacks=[TimeLimit(minutes * 60)])
    test = model.evaluate(test_ds, return_dict=True, verbose=0)
    row = {"family": family, "recipe": recipe, "seed": seed, "test_accuracy": float(test["accuracy"]),
           "best_val_accuracy": max(result.history["val_accuracy"]),
           "best_epoch": result.best_epoch + 1, "epochs_run": result.epochs_run,
           "train_seconds": result.seconds, "params": int(model.count_params()),
           "record": recipe_record(phase, type(optimizer).__name__, data.copies,
                                   params.augment_online),
           "build": build}
    log.info("%s %s seed %d: test accuracy %.3f after %d epochs, %.0fs", family, recipe, seed,
             row["test_accuracy"], row["epochs_run"], row["train_seconds"])
    keras.backend.clear_session()
    return row


def render(rows: list[dict[str, Any]], settings: dict[str, Any], started: tuple, ended: tuple) -> str:
    """The results as markdown: a summary per (model, recipe), every run, settings, machine."""
    lines = ["# Small-data recipe: current against new, from-scratch ViT and CNN", "",
             f"Generated by `benchmarks/recipe.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
             "", "| model | recipe | test acc (mean) | per seed | best val acc | epochs | train s | params |",
             "|---|---|---|---|---|---|---|---|"]
    for family, name in FAMILIES.items():
        for recipe in RECIPES:
            runs = [r for r in rows if r["family"] == family and r["recipe"] == recipe]
            if not runs:
                continue
            accs = [r["test_accuracy"] for r in runs]
            lines.append(
                f"| {name} | {recipe} | {sum(accs) / len(accs):.3f} | "
                f"{', '.join(f'{a:.3f}' for a in accs)} | "
                f"{max(r['best_val_accuracy'] for r in runs):.3f} | "
                f"{', '.join(str(r['epochs_run']) for r in runs)} | "
                f"{sum(r['train_seconds'] for r in runs) / len(runs):.0f} | {runs[0]['params']:,} |")
    lines += ["", "## Recipes (record.json `recipe` and `build` of each)", ""]
    for family, name in FAMILIES.items():
        for recipe in RECIPES:
            run = next((r for r in rows if r["family"] == family and r["recipe"] == recipe), None)
            if run is not None:
                lines.append(f"- {name}, {recipe}: recipe `{run['record']}`; build `{run['build']}`")
    lines += ["", "## Settings", ""]
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    seconds = "seconds (and so how many epochs fit a time limit)"
    lines += ["", *machine_section(started, ended, seconds), ""]
    return "\n".join(lines)


def parse_epochs_of(items: tuple[str, ...]) -> dict[str, int]:
    """`family/recipe=N` options as {"family/recipe": N}; a clear error for anything else."""
    out: dict[str, int] = {}
    for item in items:
        key, _, value = item.partition("=")
        family, _, recipe = key.partition("/")
        if family not in FAMILIES or recipe not in RECIPES or not value.isdigit() or int(value) < 1:
            raise click.BadParameter(f"{item!r} is not FAMILY/RECIPE=N with FAMILY in "
                                     f"{', '.join(FAMILIES)}, RECIPE in {', '.join(RECIPES)}, N >= 1",
                                     param_hint="--epochs-of")
        out[key] = int(value)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(path_type=Path), default=PACS, show_default=True,
              help="Folder with one sub-folder of images per class.")
@click.option("--image-size", type=click.IntRange(min=32), default=64, show_default=True,
              help="Input size of both families (ViT patch = size / 8: 64 tokens).")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=4.0,
              show_default=True, help="Wall-clock cap per run (checked after each epoch).")
@click.option("--epochs-of", "epochs_of", multiple=True, metavar="FAMILY/RECIPE=N",
              help="Epochs of one family and recipe (e.g. cnn/new=36), to give every run about the "
                   "same wall time; the others get --epochs.")
@click.option("--seeds", type=int, multiple=True, default=(42,), show_default=True)
@click.option("--family", "families", multiple=True, type=click.Choice(list(FAMILIES)))
@click.option("--recipe", "recipes", multiple=True, type=click.Choice(list(RECIPES)))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_OUT,
              show_default=True, help="Markdown results file (written atomically).")
def main(data: Path, image_size: int, epochs: int, epochs_of: tuple[str, ...], minutes: float,
         seeds: tuple[int, ...],
         families: tuple[str, ...], recipes: tuple[str, ...], out: Path) -> None:
    """Train each family with each recipe and seed on one fixed split; write a markdown table."""
    from vitbench.data.manifest import read_labels

    per_run = parse_epochs_of(epochs_of)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as workdir:
        paths = prepare(params_for("current", image_size, SPLIT_SEED,
                                   {"dataset": {"source": str(data)}}), Path(workdir) / "proj")
        counts = split_counts(paths)
        settings = {
            "data": f"`{data}`, {len(read_labels(paths.labels))} classes, split seed {SPLIT_SEED}: "
                    + ", ".join(f"{k} {v}" for k, v in counts.items()),
            "budget": f"{epochs} epochs ({', '.join(f'{k}: {v}' for k, v in per_run.items()) or 'all runs'}) "
                      f"at {image_size}px, batch 32, chosen so that every run takes about the same "
                      f"wall time; each run capped at {minutes:g} min (checked after each epoch)",
            "seeds": ", ".join(map(str, seeds)),
            "command": f"`python benchmarks/recipe.py {' '.join(sys.argv[1:])}`"}
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            for family in families or FAMILIES:
                for recipe in recipes or RECIPES:
                    if family not in ONLY.get(recipe, (family,)):
                        continue
                    n = per_run.get(f"{family}/{recipe}", epochs)
                    rows.append(run_one(family, recipe, seed, paths, image_size, n, minutes))
                    text = render(rows, settings, started, os.getloadavg())
                    with atomic_file(out) as fh:   # after every run: a stopped run keeps its rows
                        fh.write(text)
    click.echo(text)


if __name__ == "__main__":
    main()
