"""Benchmark: real transfer learning against training from scratch, and the feature cache's speed-up.

On a folder of class folders (default `../shared/datasets/pacs_cartoon`, 7 classes) this script
prepares the data with the package's own stages (fetch, clean, split, augment), then:

1. `vitbench.train.phases.train_cnn` with the real ImageNet MobileNetV2 weights (`--weights`,
   `cnn.weights` = that file, `pretrained: true`, feature cache on): test accuracy of
   cnn_transfer and cnn_finetuned, train seconds;
2. the same `train_cnn` with `pretrained: false`: the same network, epochs and data from random
   weights (its first phase trains the whole network);
3. the transfer phase alone, with and without the feature cache (`vitbench.train.features`): training
   images per second over the phase's wall time (feature computation included) and per epoch.

Writes a markdown report (stdout and `--out`) with the settings, the machine and the date.

    nice -n 5 python benchmarks/transfer.py --image-size 96 --epochs 5
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import keras
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import PACS, machine, pipeline_params, prepare, split_counts  # noqa: E402

DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_1.0_224_no_top.h5"
DEFAULT_OUT = HERE / "results" / "transfer.md"

log = logging.getLogger("vitbench.benchmarks.transfer")


def make_params(data: Path, weights: Path, image_size: int, epochs: int, copies: int,
                **cnn: Any) -> Any:
    """Params for one run: params.yaml with the folder as the dataset and MobileNetV2 at
    `image_size` from `weights` (the recipe, cnn.transfer and cnn.finetune, is params.yaml's but
    for the keys in `cnn`); no online augmentation, which would turn the feature cache off."""
    from vitbench.core.config import AugmentOnline, to_dict

    return pipeline_params({
        "seed": 42,
        "dataset": {"source": str(data)},
        "clean": {"min_side": 32, "max_side": 256},
        "augment": {"copies": copies},
        "augment_online": to_dict(AugmentOnline.only()),   # every layer off
        "train": {"epochs": epochs, "batch_size": 32, "patience": 3, "mixed_precision": False},
        "cnn": {"arch": "mobilenetv2", "image_size": image_size, "weights": str(weights), **cnn},
    })


def test_accuracy(paths: Any, model_id: str) -> tuple[float, dict[str, Any]]:
    """Accuracy of models/<id> on data/split/test.csv, and its record."""
    from vitbench.data.pipeline import dataset_from_manifest
    from vitbench.models.store import load_model

    model, record = load_model(paths.model(model_id))
    ds = dataset_from_manifest(paths.split_csv("test"), record["classes"], record["image_size"],
                               record["preprocess"], 64)
    labels = np.concatenate([y.numpy() for _, y in ds])
    predicted = model.predict(ds, verbose=0).argmax(axis=1)
    return float((predicted == labels).mean()), record


def train_and_test(params: Any, paths: Any, name: str) -> list[dict[str, Any]]:
    """train_cnn, then both models' test accuracy, epochs and train seconds."""
    from vitbench.train.phases import train_cnn

    start = time.perf_counter()
    train_cnn(params.cnn, params.train, params.seed, paths)
    wall = time.perf_counter() - start
    rows = []
    for model_id in ("cnn_transfer", "cnn_finetuned"):
        acc, record = test_accuracy(paths, model_id)
        rows.append({"run": name, "model": model_id, "test_accuracy": acc,
                     "best_val_accuracy": max(record["history"]["val_accuracy"]),
                     "epochs": record["epochs_run"], "train_seconds": record["train_seconds"],
                     "pretrained": record["pretrained"], "stage_seconds": wall})
        log.info("%s %s: test accuracy %.3f", name, model_id, acc)
    return rows


def transfer_speed(params: Any, paths: Any, cache: bool, backup: Path) -> dict[str, float]:
    """The transfer phase alone (frozen pretrained base, Adam at cnn.transfer.lr), timed end to
    end: feature computation (cache on) included; early stopping off so every run does the
    same epochs."""
    from vitbench.train import features, loop, optim, phases as training
    from vitbench.models import registry
    from vitbench.models.store import set_backbone_trainable
    from vitbench.models.cnn.builder import build_cnn

    family = registry.family("cnn")
    training.setup_runtime(params.train, params.seed)
    size, preprocess = family.input_spec(params.cnn)
    data = training.load_train_data(params.train, params.seed, paths, size, preprocess)
    build = family.build_kwargs(params.cnn, len(data.classes))
    model = build_cnn(**build, weights=params.cnn.weights)
    set_backbone_trainable(model, "cnn", False)
    start = time.perf_counter()
    head = (features.head_on_features(model, data.train, data.val, data.batch_size, params.seed)
            if cache else None)
    fitted, train, val = (head.model, head.train, head.val) if head else (model, data.train, data.val)
    optim.compile_model(fitted, keras.optimizers.Adam(params.cnn.transfer.lr),
                           len(data.classes))
    result = loop.fit_phase(fitted, train, val, epochs=params.train.epochs,
                                patience=params.train.epochs, backup_dir=backup, curves_dir=None)
    seconds = time.perf_counter() - start
    images = result.epochs_run * len(data.train_paths)
    return {"cache": cache, "epochs": result.epochs_run, "train_images": len(data.train_paths),
            "seconds": seconds, "images_per_second": images / seconds,
            "epoch_images_per_second": images / result.seconds,
            "feature_seconds": head.seconds if head else 0.0,
            "val_accuracy": result.history["val_accuracy"][-1]}


def render(rows: list[dict[str, Any]], speed: list[dict[str, Any]], settings: dict[str, Any],
           counts: dict[str, int], total: float) -> str:
    """The markdown report."""
    names = {("transfer", "cnn_transfer"): "MobileNetV2, ImageNet weights, transfer (frozen base + head)",
             ("transfer", "cnn_finetuned"): "MobileNetV2, ImageNet weights, fine-tuned",
             ("scratch", "cnn_transfer"): "MobileNetV2, random weights, phase 1 (whole net trained)",
             ("scratch", "cnn_finetuned"): "MobileNetV2, random weights, phase 2 (fine-tune lr)"}
    out = [f"# Real transfer learning: MobileNetV2 on {settings['data'].name}",
           "",
           f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} on {machine()}; the 2 cores were "
           "shared with other jobs running at the same time, so the seconds are upper bounds.",
           "",
           f"Command: `{settings['command']}`",
           "",
           f"Data: {counts['train']} training images ({counts['augmented']} with "
           f"{settings['copies']} augmented copy/copies each), {counts['val']} validation, "
           f"{counts['test']} test; {settings['image_size']} px; train.epochs = {settings['epochs']} "
           "per phase, batch 32, patience 3, Adam at cnn.transfer.lr = 1e-3 then cnn.finetune.lr; "
           f"weights: {settings['weights'].name}.",
           "",
           "| model | test accuracy | best val accuracy | epochs | train seconds |",
           "|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {names[(r['run'], r['model'])]} | {r['test_accuracy']:.3f} | "
                   f"{r['best_val_accuracy']:.3f} | {r['epochs']} | {r['train_seconds']:.0f} |")
    out += ["",
            "Train seconds: the phase's epochs as recorded in record.json (the transfer phase's "
            "include computing the cached features).",
            "",
            "## The transfer phase with and without the feature cache",
            "",
            "| feature cache | epochs | phase seconds | of which features | training images/s "
            "(phase) | training images/s (epochs only) | last val accuracy |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for s in speed:
        out.append(f"| {'on' if s['cache'] else 'off'} | {s['epochs']} | {s['seconds']:.1f} | "
                   f"{s['feature_seconds']:.1f} | {s['images_per_second']:.0f} | "
                   f"{s['epoch_images_per_second']:.0f} | {s['val_accuracy']:.3f} |")
    on, off = (next(s for s in speed if s["cache"] is c) for c in (True, False))
    out += ["",
            f"Speed-up of the transfer phase: {on['images_per_second'] / off['images_per_second']:.1f}x "
            f"over the whole phase (the one pass that computes the features included: it grows "
            f"with the epochs), {on['epoch_images_per_second'] / off['epoch_images_per_second']:.0f}x "
            "per epoch once the features are cached.",
            "",
            f"Total benchmark time: {total / 60:.1f} min.", ""]
    return "\n".join(out)


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=PACS, show_default=True, help="A folder of class folders.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=DEFAULT_WEIGHTS, show_default=True, help="No-top MobileNetV2 .h5 weights.")
@click.option("--image-size", default=96, show_default=True)
@click.option("--epochs", default=5, show_default=True, help="train.epochs (each phase).")
@click.option("--copies", default=1, show_default=True, help="augment.copies.")
@click.option("--finetune-lr", default=1e-5, show_default=True, help="cnn.finetune.lr.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True)
def main(data: Path, weights: Path, image_size: int, epochs: int, copies: int, finetune_lr: float,
         out: Path) -> None:
    """Transfer vs from scratch on real data, and the feature cache's speed-up."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from vitbench.data.manifest import read_manifest
    from vitbench.core.fsutil import atomic_file

    start = time.perf_counter()
    common = {"data": data.resolve(), "weights": weights.resolve(), "image_size": image_size,
              "epochs": epochs, "copies": copies}
    ft = {"finetune": {"lr": finetune_lr}}
    with tempfile.TemporaryDirectory(prefix="vitbench-transfer-") as tmp:
        pre = make_params(**common, pretrained=True, **ft)
        paths = prepare(pre, Path(tmp) / "project")
        counts = split_counts(paths)
        counts["augmented"] = len(read_manifest(paths.augmented_csv))
        rows = train_and_test(pre, paths, "transfer")
        rows += train_and_test(make_params(**common, pretrained=False, **ft), paths, "scratch")
        speed = [transfer_speed(pre, paths, cache, Path(tmp) / f"backup-{cache}")
                 for cache in (True, False)]
    command = "nice -n 5 python benchmarks/transfer.py " + " ".join(sys.argv[1:])
    report = render(rows, speed, {**common, "command": command.strip()}, counts,
                    time.perf_counter() - start)
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as fh:
        fh.write(report)


if __name__ == "__main__":
    main()
