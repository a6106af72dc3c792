"""models/<id>/README.md: the model card, written by the evaluate stage from what it measured.

The card says what the model was trained on (dataset source, classes, images per split), how
(its record's recipe, pretrained weights or not: a loud line when a model meant to start from
pretrained weights was trained from random ones), how well it does on the test split (the numbers
of metrics/<id>.json, with their intervals), what it is for and not, and how to load it. Every
name a user chose (class names, the dataset source) goes through `vitbench.core.markup.escape_text`.
No TensorFlow here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitbench.data.manifest import read_labels, read_manifest
from vitbench.core.errors import ConfigError
from vitbench.core.fsutil import atomic_file, read_json
from vitbench.core.markup import escape_text
from vitbench.models import registry
from vitbench.core.paths import Paths
from vitbench.evaluate.outputs import read_model_metrics
from vitbench.core.stats import ALPHA

CARD_FILE = "README.md"
SPLITS = ("train", "val", "test")


def split_counts(paths: Paths) -> dict[str, int]:
    """Images per split (data/split/<split>.csv)."""
    return {split: len(read_manifest(paths.split_csv(split))) for split in SPLITS}


def write_card(model_id: str, dataset_source: str, paths: Paths) -> Path:
    """Write models/<id>/README.md (atomically) from its record, the split and its metrics."""
    model_dir = paths.model(model_id)
    record = read_json(model_dir / "record.json")
    text = model_card(model_id, record, read_model_metrics(paths, model_id), dataset_source,
                      read_labels(paths.labels), split_counts(paths))
    with atomic_file(model_dir / CARD_FILE) as fh:
        fh.write(text)
    return model_dir / CARD_FILE


def model_card(model_id: str, record: dict[str, Any], metrics: dict[str, Any], dataset_source: str,
               classes: list[str], counts: dict[str, int]) -> str:
    """The card's markdown."""
    name = escape_text(record.get("display_name", model_id))
    lines = [f"# {name} (`{model_id}`)", ""]
    if random_weights(model_id, record):
        lines += [f"> **WARNING: trained from random weights.** `{model_id}` is meant to start "
                  "from pretrained ImageNet weights, but none were loaded (no network or no "
                  "weights file while `pretrained: auto`): it is a from-scratch model, and its "
                  "numbers say nothing about transfer learning.", ""]
    lines += [f"An image classifier ({escape_text(record['family'])} family) trained and "
              "evaluated by the vitbench pipeline (`dvc repro`). Its classes, in the order of "
              "its outputs, are listed under Data.", ""]
    lines += _data(dataset_source, classes, counts)
    lines += _recipe(record)
    lines += _metrics(model_id, metrics, counts["test"])
    lines += _use(model_id, record, classes)
    return "\n".join(lines) + "\n"


def random_weights(model_id: str, record: dict[str, Any]) -> bool:
    """Whether a model meant to start from pretrained weights was trained from random ones."""
    try:
        spec = registry.model_spec(model_id)   # the family of the record is declared already
    except ConfigError:                        # a folder of another name: nothing is meant
        return False
    return bool(spec.meant_pretrained and not record.get("pretrained"))


def _data(source: str, classes: list[str], counts: dict[str, int]) -> list[str]:
    shown = ", ".join(f"{i}: {escape_text(c)}" for i, c in enumerate(classes))
    return ["## Data", "",
            f"- Dataset source (`dataset.source`): {escape_text(source)}",
            f"- {len(classes)} classes (output index: name): {shown}",
            f"- Images: {counts['train']} train, {counts['val']} validation, {counts['test']} test "
            "(data/split/; the test images were never used for training or model selection)", ""]


def _recipe(record: dict[str, Any]) -> list[str]:
    recipe = record.get("recipe") or {}
    pretrained = "yes (ImageNet)" if record.get("pretrained") else "no (random initial weights)"
    lines = ["## Training recipe", "",
             f"- Pretrained weights loaded: {pretrained}",
             f"- Input: {record['image_size']}x{record['image_size']} RGB, preprocessing "
             f"`{escape_text(record['preprocess'])}`",
             f"- Parameters: {record['params_total']:,} ({record['params_trainable']:,} trainable)",
             f"- Epochs run: {record.get('epochs_run')} (best epoch {record.get('best_epoch')})"]
    if recipe:
        lines.append(f"- Optimizer {escape_text(recipe.get('optimizer'))}, learning rate "
                     f"{recipe.get('lr')}, weight decay {recipe.get('weight_decay')}, schedule "
                     f"{escape_text(recipe.get('schedule'))}, label smoothing "
                     f"{recipe.get('label_smoothing')}")
        lines.append(f"- Augmentation: {recipe.get('augment_copies')} stored copies per training "
                     f"image, online: {escape_text(', '.join(recipe.get('augment_online') or []) or 'none')}")
    build = json.dumps(record["build"]).replace("`", "\\u0060")  # JSON still; no code span end
    lines.append(f"- Architecture (record.json `build`): `{build}`")
    return lines + [""]


def _metrics(model_id: str, metrics: dict[str, Any], test_images: int) -> list[str]:
    p = metrics["chance_p"]
    verdict = ("better than always predicting the most frequent class" if p < ALPHA else
               "NOT distinguishable from always predicting the most frequent class")
    return [f"## Test metrics ({test_images} test images, 95% intervals)", "",
            "| metric | value | 95% interval |", "|---|---|---|",
            f"| accuracy | {metrics['accuracy']:.4f} | [{metrics['accuracy_ci_low']:.4f}, "
            f"{metrics['accuracy_ci_high']:.4f}] (Wilson) |",
            f"| macro F1 | {metrics['f1_macro']:.4f} | [{metrics['f1_macro_ci_low']:.4f}, "
            f"{metrics['f1_macro_ci_high']:.4f}] (bootstrap) |",
            f"| expected calibration error | {metrics['ece']:.4f} | |",
            f"| chance p (binomial, vs. the majority class) | {p:.4g} | |", "",
            f"At p < {ALPHA}: {verdict}. All numbers: metrics/{model_id}.json (`dvc metrics show`).", ""]


def _use(model_id: str, record: dict[str, Any], classes: list[str]) -> list[str]:
    size = record["image_size"]
    return ["## Intended use and limits", "",
            f"- Sorting images into these {len(classes)} classes, for images like the training "
            "data (same source, framing and kinds of pictures). Any other image still gets one "
            "of these classes: there is no \"none of these\" output.",
            "- The test split is small and comes from the same source as the training data: the "
            "intervals above are the honest spread, and accuracy on other data may be lower.",
            "- A benchmark artefact (CNN versus Vision Transformer), not a product: not for "
            "decisions about people, safety or health.", "",
            "## How to load", "",
            "```python",
            "import vitbench  # registers vitbench's layers with Keras",
            "import keras",
            f"model = keras.saving.load_model(\"models/{model_id}/model.keras\")",
            "```", "",
            f"The model takes float32 images [batch, {size}, {size}, 3] after the preprocessing "
            f"`{escape_text(record['preprocess'])}` "
            "(`vitbench.data.pipeline.preprocess_fn`) and returns one probability per class, in "
            "the order under Data. From the command line, on any image files or folders (the "
            "same decoding and resizing as training):", "",
            "```",
            f"vitbench predict --model {model_id} photo.jpg more_photos/",
            "```", ""]
