"""Models on disk: build one from its record, save it, load it (docs/design.md, "Models on disk").

A trained model lives in `models/<id>/` as `model.weights.h5` (Keras weights only, never a pickled
or Lambda-bearing model file) plus `record.json`, whose `family` and `build` say how to rebuild
the architecture through the family registry; vitbench reads those two. `model.keras`, the same
model in Keras' own format, is written beside them for others (`keras.saving.load_model` after
`import vitbench`), and evaluate adds `README.md`, the model card (`vitbench.evaluate.card`). Loading therefore never needs `safe_mode=False` and
never downloads anything. The record's `predict_sha256` is the checksum of what a prediction
depends on beyond the architecture (the weights file and the `preprocess` setting): a record
whose weights file was replaced or whose preprocess was edited is refused on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np

from vitbench.core.errors import ConfigError, DataError, short_list
from vitbench.core.fsutil import atomic_dir, read_json, write_json
from vitbench.models import registry

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.weights.h5"
RECORD_FILE = "record.json"
IMAGE_SIZES = (8, 1024)        # config's widest range for any family's image_size
SPATIAL = ("image_size", "patch_size")                      # build sizes bounded by IMAGE_SIZES
DEPTHS = ("layers", "num_layers", "blocks")  # at most one per 4 stored variables
SIZE_KEYS = SPATIAL + DEPTHS + ("num_classes", "projection_dim", "num_heads", "mlp_head",
                                "hidden_size", "mlp_dim", "representation_size")
CHECKSUM = "predict_sha256"    # record key: sha256 of the weights file and the preprocess setting
FORMAT = 2                     # record.json's `format`: what this vitbench writes and reads


def build_model(record: dict[str, Any]) -> keras.Model:
    """Rebuild the (randomly initialised) architecture a record describes; never downloads weights."""
    family, build = check_record(record, "record")
    return registry.family(family).rebuild(build)


def save_model(model: keras.Model, model_dir: str | Path, record: dict[str, Any]) -> None:
    """Write `model.weights.h5` (weights only, no optimizer state), `record.json` and
    `model.keras` (the whole model, for Keras users: `vitbench.models.keras_file`) atomically.

    `params_total`, `params_trainable` and (when the record has an `id`) `display_name` are
    filled in when missing.
    """
    record = {"format": FORMAT, **record}
    check_record(record, "record")
    record.setdefault("params_total", int(model.count_params()))
    record.setdefault("params_trainable", count_params(model.trainable_weights))
    if "id" in record:
        record.setdefault("display_name", display_name(record["id"], record))
    # Keras 3 writes a compiled model's optimizer slots into the weights file too (3x the size
    # after Adam); a fresh, uncompiled copy of the architecture holds only the model's weights.
    bare = build_model(record)
    bare.set_weights(model.get_weights())
    from vitbench.models.keras_file import KERAS_FILE, save_keras  # it imports this package

    with atomic_dir(model_dir) as tmp:
        bare.save_weights(tmp / WEIGHTS_FILE)
        save_keras(bare, tmp / KERAS_FILE)
        if "preprocess" in record:
            record[CHECKSUM] = predict_checksum(tmp / WEIGHTS_FILE, record["preprocess"])
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
    check_format(record, str(record_file))
    check_record(record, str(record_file))
    check_checksum(record, weights, str(record_file))
    check_against_weights(record, weights, str(record_file))
    try:
        model = build_model(record)
    except ConfigError as exc:   # a builder's own check, worded for params.yaml: name the record
        field = f"build.{exc.key.rsplit('.', 1)[-1]}"
        raise DataError(f"{record_file}: {field} = {exc.value!r} is not allowed; expected "
                        f"{exc.allowed}") from exc
    except (TypeError, ValueError) as exc:
        raise DataError(f"{record_file}: cannot rebuild the model from its build arguments "
                        f"{record['build']}: {exc}") from exc
    try:
        model.load_weights(weights)
    except (ValueError, OSError) as exc:
        raise DataError(f"{weights} does not match the architecture in {record_file}: {exc}") from exc
    outputs = model.output_shape[-1]
    if "classes" in record and outputs != len(record["classes"]):
        raise DataError(f"{record_file}: classes names {len(record['classes'])} classes but the "
                        f"model's head has {outputs} outputs")
    return model, record


def predict_checksum(weights: Path, preprocess: Any) -> str:
    """sha256 of the weights file's bytes and the preprocess setting (what a prediction depends
    on besides the architecture the record's `build` describes)."""
    digest = hashlib.sha256()
    with open(weights, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    digest.update(b"\0preprocess=" + json.dumps(preprocess).encode())
    return digest.hexdigest()


def check_checksum(record: dict[str, Any], weights: Path, where: str) -> None:
    """A DataError unless the record's `predict_sha256` matches its weights file and preprocess
    setting (a record with a `preprocess` always has one)."""
    stored = record.get(CHECKSUM)
    if stored is None and "preprocess" not in record:
        return
    if stored != predict_checksum(weights, record.get("preprocess")):
        stage = registry.family(record["family"]).stage
        raise DataError(f"{where}: {weights.name} or preprocess = {record.get('preprocess')!r} changed "
                        f"since training ({CHECKSUM} does not match): the model would predict "
                        f"wrong labels; rebuild it with `dvc repro {stage}` (or restore both files "
                        "with `dvc checkout`)")


def count_params(weights: list[Any]) -> int:
    """Number of scalars in a list of Keras variables."""
    return int(sum(np.prod(w.shape) for w in weights))


def check_record(record: Any, where: str) -> tuple[str, dict[str, Any]]:
    """(family, build) of a record, or a DataError naming `where` and the bad field."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    family, build = record.get("family"), record.get("build")
    if family not in registry.family_names():
        raise DataError(f"{where}: family = {family!r} is not one of "
                        f"{', '.join(registry.family_names())}")
    if not isinstance(build, dict):
        raise DataError(f"{where}: build = {build!r} must be the builder's keyword arguments")
    return family, build


def check_format(record: Any, where: str) -> None:
    """A DataError, saying how to rebuild it, for a saved record of another format than the one
    this vitbench writes (an older vitbench's: no compatibility branches for those)."""
    found = record.get("format", 1) if isinstance(record, dict) else None
    if found != FORMAT:
        raise DataError(f"{where}: record format {found!r} is not {FORMAT}, the one this vitbench "
                        "reads (the model was saved by another version): rebuild it with `dvc "
                        "repro --force <its training stage>` (train_cnn, train_vit or finetune_vit)")


def check_against_weights(record: dict[str, Any], weights: Path, where: str) -> None:
    """Refuse, before anything is built, a record that cannot describe the stored `weights`: the
    class names against the head (`build.num_classes`), the input size, and every size in `build`
    against the stored variables. No layer can be wider than the widest stored variable, nor the
    network deeper than its variables allow: a tampered size (10**9 units) would otherwise
    exhaust memory while the model is built, before `load_weights` could tell the difference."""
    build = record["build"]
    classes = record.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
            raise DataError(f"{where}: classes = {_shown(classes)} must be a list of class names")
        twice = sorted({c for c in classes if classes.count(c) > 1})
        if twice:
            raise DataError(f"{where}: the class name(s) {short_list(repr(c) for c in twice)} appear more "
                            "than once in classes: each output of the model needs its own name "
                            "(retrain it, or restore record.json with `dvc checkout`)")
        if "num_classes" in build and build["num_classes"] != len(classes):
            raise DataError(f"{where}: classes names {len(classes)} classes but the model's head "
                            f"has build.num_classes = {build.get('num_classes')!r} outputs")
    if "image_size" in record and not _in_range(record["image_size"], *IMAGE_SIZES):
        raise DataError(f"{where}: image_size = {_shown(record['image_size'])} is not allowed; "
                        f"expected an integer from {IMAGE_SIZES[0]} to {IMAGE_SIZES[1]}")
    if record.get("image_size", build.get("image_size")) != build.get("image_size"):
        raise DataError(f"{where}: image_size = {record['image_size']} differs from the model's "
                        f"build.image_size = {build.get('image_size')}")
    shapes = stored_shapes(weights)
    widest = max((max(s) for s in shapes if s), default=0)
    for key, value in _sizes(build, "build"):
        name = key.rsplit(".", 1)[-1].split("[")[0]
        hi = IMAGE_SIZES[1] if name in SPATIAL else len(shapes) // 4 if name in DEPTHS else widest
        if not _in_range(value, 1, hi):
            raise DataError(f"{where}: {key} = {_shown(value)} is not allowed; expected an "
                            f"integer from 1 to {hi} for the {len(shapes)} variables of {weights.name}")


def stored_shapes(weights: Path) -> list[tuple[int, ...]]:
    """The shape of every variable in a Keras weights file (read without building anything)."""
    import h5py

    shapes: list[tuple[int, ...]] = []
    try:
        with h5py.File(weights, "r") as fh:
            fh.visititems(lambda _, obj: shapes.append(tuple(obj.shape))
                          if isinstance(obj, h5py.Dataset) else None)
    except OSError as exc:
        raise DataError(f"{weights} is not a Keras weights file: {exc}") from exc
    return shapes


def _sizes(node: Any, key: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every integer in `build` (nested dicts and lists; not booleans),
    and of every value under a size-like key that is not an integer (a string, a float)."""
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _sizes(v, f"{key}.{k}")]
    if isinstance(node, list):
        return [kv for i, v in enumerate(node) for kv in _sizes(v, f"{key}[{i}]")]
    if isinstance(node, int) and not isinstance(node, bool):
        return [(key, node)]
    name = key.rsplit(".", 1)[-1].split("[")[0]
    return [(key, node)] if name in SIZE_KEYS and node is not None else []


def _in_range(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _shown(value: Any) -> str:
    """repr(value), cut to 80 characters for an error line."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


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
