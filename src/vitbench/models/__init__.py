"""Models: build one from its record, save and load it, freeze its backbone, find pretrained weights.

A trained model lives in `models/<id>/` as `model.weights.h5` (Keras weights only, never a pickled
or Lambda-bearing model file) plus `record.json`, whose `family` and `build` say how to rebuild
the architecture (see docs/design.md, "Models on disk"). Loading therefore never needs
`safe_mode=False` and never downloads anything.

Pretrained weights (`pretrained: auto|true|false`, the Keras cache, downloads) are in
`vitbench.models.weights`, re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from vitbench.errors import DataError
from vitbench.fsutil import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

FAMILIES = ("cnn", "vit_scratch", "vit_ft")
WEIGHTS_FILE = "model.weights.h5"
RECORD_FILE = "record.json"
# Build arguments that would load pretrained weights; a rebuild from a record never does.
_WEIGHT_KWARGS = {"cnn": "weights", "vit_ft": "weights_path"}


# --- building, saving, loading ------------------------------------------------------------------

def build_model(record: dict[str, Any]) -> keras.Model:
    """Rebuild the (randomly initialised) architecture a record describes; never downloads weights."""
    family, build = _check_record(record, "record")
    kwargs = dict(build)
    if family in _WEIGHT_KWARGS:
        kwargs[_WEIGHT_KWARGS[family]] = None
    return _builder(family)(**kwargs)


def save_model(model: keras.Model, model_dir: str | Path, record: dict[str, Any]) -> None:
    """Write `model.weights.h5` (weights only, no optimizer state) and `record.json` atomically.

    `params_total`, `params_trainable` and (when the record has an `id`) `display_name` are
    filled in when missing.
    """
    _check_record(record, "record")
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
    _check_record(record, str(record_file))
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


def _check_record(record: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    family, build = record.get("family"), record.get("build")
    if family not in FAMILIES:
        raise DataError(f"{where}: family = {family!r} is not one of {', '.join(FAMILIES)}")
    if not isinstance(build, dict):
        raise DataError(f"{where}: build = {build!r} must be the builder's keyword arguments")
    return family, build


def _builder(family: str) -> Callable[..., keras.Model]:
    from vitbench.models import cnn, pretrained_vit, vit

    return {"cnn": cnn.build_cnn, "vit_scratch": vit.build_vit,
            "vit_ft": pretrained_vit.build_vit_ft}[family]


# --- training helpers -----------------------------------------------------------------------------

def set_backbone_trainable(model: keras.Model, family: str, trainable: bool) -> None:
    """Freeze or unfreeze the pretrained part: cnn -> layer "base"; vit_ft -> all but "head";
    vit_scratch -> every layer. Recompile the model afterwards for the change to take effect.

    A CNN's BatchNormalization layers stay frozen, hence in inference mode, when the base is
    unfrozen: Keras 3 lets `fit`'s training=True override the training=False the base is called
    with (keras-team/keras#20285), and only a frozen BatchNormalization ignores it.
    """
    if family == "cnn":
        base = model.get_layer("base")
        base.trainable = trainable
        for layer in base.layers:  # keras.applications bases are flat
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    elif family == "vit_ft":
        for layer in model.layers:
            if layer.name != "head":
                layer.trainable = trainable
    elif family == "vit_scratch":
        for layer in model.layers:
            layer.trainable = trainable
    else:
        raise ValueError(f"family = {family!r} is not one of {', '.join(FAMILIES)}")


def display_name(model_id: str, record: dict[str, Any]) -> str:
    """Human name from the architecture, e.g. "MobileNetV2 (fine-tuned)", "ViT-B/32 (transfer)"."""
    family, build = _check_record(record, f"record of {model_id}")
    if family == "vit_scratch":
        tricks = "+".join(name for name, on in (("SPT", build.get("spt")), ("LSA", build.get("lsa"))) if on)
        return "ViT from scratch" + (f" ({tricks})" if tricks else "")
    if family == "cnn":
        from vitbench.models.cnn import get_arch

        base = get_arch(build["arch"]).display
    else:
        from vitbench.models.pretrained_vit import variant_name

        base = variant_name(build["variant"])
    phase = "fine-tuned" if model_id.endswith("finetuned") else "transfer"
    return f"{base} ({phase})"


def attention_weights(model: keras.Model, record: dict[str, Any], x: np.ndarray) -> list[np.ndarray]:
    """Per transformer layer, the attention weights [batch, heads, tokens, tokens] of a ViT model."""
    family, _ = _check_record(record, "record")
    if family == "vit_scratch":
        from vitbench.models import vit

        return vit.attention_weights(model, x)
    if family == "vit_ft":
        from vitbench.models import pretrained_vit

        return pretrained_vit.attention_weights(model, x)
    raise ValueError(f"a {family} model has no attention weights")


# --- pretrained weights: vitbench.models.weights (re-exported for callers) -----------------------

from vitbench.models.weights import (  # noqa: E402, F401
    REACH_TIMEOUT,
    WeightsFileError,
    cached_download,
    check_reachable,
    keras_home,
    resolve_pretrained,
)
