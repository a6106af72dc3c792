"""Models on disk: build one from its record, save it, load it (docs/design.md, "Models on disk").

A trained model lives in `models/<id>/` as `model.weights.h5` (Keras weights only, never a pickled
or Lambda-bearing model file) plus `record.json`, whose `family` and `build` say how to rebuild
the architecture through the family registry. Loading therefore never needs `safe_mode=False` and
never downloads anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np

from vitbench.errors import DataError
from vitbench.fsutil import atomic_dir, read_json, write_json
from vitbench.models import registry

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.weights.h5"
RECORD_FILE = "record.json"


def build_model(record: dict[str, Any]) -> keras.Model:
    """Rebuild the (randomly initialised) architecture a record describes; never downloads weights."""
    family, build = check_record(record, "record")
    return registry.family(family).rebuild(build)


def save_model(model: keras.Model, model_dir: str | Path, record: dict[str, Any]) -> None:
    """Write `model.weights.h5` (weights only, no optimizer state) and `record.json` atomically.

    `params_total`, `params_trainable` and (when the record has an `id`) `display_name` are
    filled in when missing.
    """
    check_record(record, "record")
    record = dict(record)
    record.setdefault("params_total", int(model.count_params()))
    record.setdefault("params_trainable", count_params(model.trainable_weights))
    if "id" in record:
        record.setdefault("display_name", display_name(record["id"], record))
    # Keras 3 writes a compiled model's optimizer slots into the weights file too (3x the size
    # after Adam); a fresh, uncompiled copy of the architecture holds only the model's weights.
    bare = build_model(record)
    bare.set_weights(model.get_weights())
    with atomic_dir(model_dir) as tmp:
        bare.save_weights(tmp / WEIGHTS_FILE)
        write_json(tmp / RECORD_FILE, record)
    log.info("saved %s (%s parameters) to %s", record.get("id", "model"),
             f"{record['params_total']:,}", model_dir)


def load_model(model_dir: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """Rebuild the model saved in `model_dir` and load its weights; returns (model, record)."""
    model_dir = Path(model_dir)
    weights, record_file = model_dir / WEIGHTS_FILE, model_dir / RECORD_FILE
    for path in (model_dir, weights, record_file):
        if not path.exists():
            raise DataError(f"{path} does not exist: {model_dir} is not a saved model "
                            "(run its training stage first)")
    try:
        record = read_json(record_file)
    except ValueError as exc:
        raise DataError(f"{record_file} is not valid JSON: {exc}") from exc
    check_record(record, str(record_file))
    try:
        model = build_model(record)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{record_file}: cannot rebuild the model from its build arguments "
                        f"{record['build']}: {exc}") from exc
    try:
        model.load_weights(weights)
    except (ValueError, OSError) as exc:
        raise DataError(f"{weights} does not match the architecture in {record_file}: {exc}") from exc
    return model, record


def count_params(weights: list[Any]) -> int:
    """Number of scalars in a list of Keras variables."""
    return int(sum(np.prod(w.shape) for w in weights))


def check_record(record: Any, where: str) -> tuple[str, dict[str, Any]]:
    """(family, build) of a record, or a DataError naming `where` and the bad field."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    family, build = record.get("family"), record.get("build")
    if family not in registry.FAMILIES:
        raise DataError(f"{where}: family = {family!r} is not one of {', '.join(registry.FAMILIES)}")
    if not isinstance(build, dict):
        raise DataError(f"{where}: build = {build!r} must be the builder's keyword arguments")
    return family, build


# --- record-level lookups in the registry ---------------------------------------------------------

def display_name(model_id: str, record: dict[str, Any]) -> str:
    """Human name from the architecture, e.g. "MobileNetV2 (fine-tuned)", "ViT-B/32 (transfer)"."""
    family, build = check_record(record, f"record of {model_id}")
    return registry.display_name(model_id, family, build)


def set_backbone_trainable(model: keras.Model, family: str, trainable: bool) -> None:
    """Freeze or unfreeze the pretrained part: cnn -> layer "base" (its BatchNorm stays frozen);
    vit_ft -> all but "head"; vit_scratch -> every layer. Recompile the model afterwards."""
    registry.family(family).set_trainable(model, trainable)


def attention_weights(model: keras.Model, record: dict[str, Any], x: np.ndarray) -> list[np.ndarray]:
    """Per transformer layer, the attention weights [batch, heads, tokens, tokens] of a ViT model."""
    family, _ = check_record(record, "record")
    attention = registry.family(family).attention
    if attention is None:
        raise ValueError(f"a {family} model has no attention weights")
    return attention(model, x)
