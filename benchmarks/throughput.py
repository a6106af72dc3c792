"""Training throughput: images/s fed from disk (the real tf.data pipeline) vs from memory, and
with the online augmentation of `augment_online`.

For each model family at the given params, one training step configuration is timed with the
same model: batches decoded from data/augmented on every step (`make_dataset(cache=False)`, as
the first epoch of a real run), batches sliced from tensors already in memory, and, when any
`augment_online` key is on, batches read from the pipeline's cache and augmented online (as every
later epoch of a real run). A disk/memory (or online/memory) ratio near 1 means the input
pipeline keeps up with the model; well below 1, the model waits for images. Models use random weights (speed does not depend on them) and the
configuration of their first phase (cnn and vit_ft: backbone frozen), compiled as the training
stage compiles them (`optim.make_optimizer` on the phase's recipe from the family's params section,
its label smoothing). Params are read as the stages read them: `config.load_params` on `--params`
(the project's params.yaml), no overrides.

    python benchmarks/throughput.py --params params.yaml --root . --steps 20
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from vitbench.train import optim
from vitbench.core.config import Params
from vitbench.models.registry import load_params
from vitbench.data.manifest import read_labels
from vitbench.data.online import batch_augmenter
from vitbench.data.pipeline import AUTOTUNE, labelled_paths, load_images, make_dataset, preprocess_fn
from vitbench.models import registry
from vitbench.models.store import build_model, display_name
from vitbench.core.paths import Paths

log = logging.getLogger(__name__)

FAMILIES = registry.family_names()
WARMUP_STEPS = 2  # traced and run before timing


def measure_throughput(params: Params, paths: Paths, steps: int,
                       families: Sequence[str] = FAMILIES) -> list[dict[str, Any]]:
    """One row per family: training images/s from disk and from memory, and their ratio."""
    keras.utils.set_random_seed(params.seed)
    classes = read_labels(paths.labels)
    files, labels = labelled_paths(paths.augmented_csv, classes)
    batch = params.train.batch_size
    rows = []
    for family in tqdm(families, desc="throughput", unit="model", disable=None):
        fam = registry.family(family)
        first = fam.models[0]
        cfg = getattr(params, fam.name)
        image_size, preprocess = fam.input_spec(cfg)
        record = {"id": first.id, "family": family, "build": fam.build_kwargs(cfg, len(classes))}
        model = build_model(record)
        fam.prepare_phase(model, first.phase, pretrained=True)
        recipe = fam.recipe(cfg, first.phase)
        optim.compile_model(model, optim.make_optimizer(recipe, steps + WARMUP_STEPS),
                            len(classes), recipe.label_smoothing)
        disk = make_dataset(files, labels, image_size, preprocess, batch, shuffle=True,
                            seed=params.seed, cache=False).repeat()
        memory = _memory_dataset(files, labels, image_size, preprocess, batch, params.seed)
        augment = batch_augmenter(params.augment_online, len(classes), params.seed)
        disk_rate = _images_per_second(model, disk, steps, batch)
        memory_rate = _images_per_second(model, memory, steps, batch)
        row = {"family": family, "model": display_name(first.id, record),
               "image_size": image_size, "batch_size": batch, "steps": steps,
               "disk_images_per_s": round(disk_rate, 1),
               "memory_images_per_s": round(memory_rate, 1),
               "disk_memory_ratio": round(disk_rate / memory_rate, 3)}
        if augment is not None:
            online = make_dataset(files, labels, image_size, preprocess, batch, shuffle=True,
                                  seed=params.seed, cache="memory", augment=augment).repeat()
            rate = _images_per_second(model, online, steps, batch, warmup=len(files) // batch + 1)
            row.update({"online_images_per_s": round(rate, 1),
                        "online_memory_ratio": round(rate / memory_rate, 3)})
        rows.append(row)
        keras.backend.clear_session()
    return rows


def _memory_dataset(files: list[str], labels: np.ndarray, image_size: int, preprocess: str,
                    batch: int, seed: int) -> tf.data.Dataset:
    """The same images, decoded and preprocessed up front, served from memory."""
    images = preprocess_fn(preprocess)(load_images(files, image_size).astype(np.float32))
    return (tf.data.Dataset.from_tensor_slices((images, labels))
            .shuffle(len(files), seed=seed).repeat().batch(batch).prefetch(AUTOTUNE))


def _images_per_second(model: keras.Model, ds: tf.data.Dataset, steps: int, batch: int,
                       warmup: int = WARMUP_STEPS) -> float:
    """Training images per second over `steps` steps, after `warmup` untimed steps (a whole epoch
    fills the pipeline's cache)."""
    model.fit(ds, steps_per_epoch=warmup, epochs=1, shuffle=False, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of measure_throughput's rows."""
    header = ("model", "px", "batch", "disk img/s", "memory img/s", "disk/memory",
              "online img/s", "online/memory")
    body = [(r["model"], r["image_size"], r["batch_size"], r["disk_images_per_s"],
             r["memory_images_per_s"], r["disk_memory_ratio"], r.get("online_images_per_s", "-"),
             r.get("online_memory_ratio", "-")) for r in rows]
    widths = [max(len(str(v)) for v in column) for column in zip(header, *body)]
    lines = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                       for i, (v, w) in enumerate(zip(line, widths))) for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False, exists=True), help="The params file.")
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False),
              help="The project root (needs data/augmented and data/split).")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1),
              help="Timed training steps per model and source.")
@click.option("--family", "families", multiple=True, type=click.Choice(FAMILIES),
              help="Only these families (default: all).")
def main(params_path: str, root: str, steps: int, families: tuple[str, ...]) -> None:
    """Print training images/s from disk, from memory and with online augmentation per family."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = measure_throughput(load_params(params_path), Paths(Path(root)), steps,
                              families or FAMILIES)
    click.echo(format_table(rows))


if __name__ == "__main__":
    main()
