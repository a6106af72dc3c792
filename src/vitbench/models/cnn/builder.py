"""The CNN baseline: a keras.applications base (frozen or not) under a new classification head.

The model follows the Keras transfer-learning guide: Input -> base (named "base", called with
training=False so its BatchNorm layers stay in inference mode even when unfrozen) ->
GlobalAveragePooling2D -> Dropout -> Dense softmax "head" (float32, so mixed precision is safe).

Weights (`cnn.weights`, see `resolve_weights`): the ImageNet files keras.applications itself
downloads, fetched through `vitbench.models.weights.cached_download` into the Keras cache
(`$KERAS_HOME/models`), so a file already there is used without any network and an offline machine
fails fast; or a local .h5 file; or an http(s) URL (downloaded once into the same cache). A file
that is named but missing, fails `cnn.weights_sha256` or does not load into the base (every
tensor's shape is checked by Keras) is a `WeightsFileError`, whatever `pretrained` says; only a
download that cannot happen (`vitbench.core.download.NetworkError`) lets `pretrained: auto` go random.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from vitbench.models.cnn.archs import CnnArch, base_arch_name, get_arch

log = logging.getLogger(__name__)

SCRATCH_BN_MOMENTUM = 0.9


def build_cnn(arch: str, image_size: int, num_classes: int, dropout: float,
              weights: str | None = None, weights_sha256: str | None = None) -> keras.Model:
    """Base + new head. `weights`: None (random) or a `cnn.weights` value: "imagenet" (Keras
    cache or download), an http(s) URL, or the path of a keras.applications no-top .h5 file of
    `arch` (see `resolve_weights`)."""
    spec = get_arch(arch)
    shape = (image_size, image_size, 3)
    base = spec.constructor(include_top=False, weights=None, input_shape=shape, name="base")
    if weights is not None:
        load_base_weights(base, spec, image_size, weights, weights_sha256)
    inputs = keras.Input(shape, name="image")
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name=f"cnn_{arch}")


def load_base_weights(base: keras.Model, spec: CnnArch, image_size: int, weights: str,
                      sha256: str | None = None) -> None:
    """Load the weights `resolve_weights` finds into a base built with weights=None.

    A file that is not a no-top weights file of this architecture (another arch, a with-top file,
    another width, not HDF5 at all) is a WeightsFileError naming the file and the architecture.
    """
    from vitbench.models.weights import WeightsFileError

    path = resolve_weights(weights, sha256, spec, image_size)
    try:
        base.load_weights(path)
    except (ValueError, OSError, KeyError) as exc:
        raise WeightsFileError(
            f"{path} is not a no-top {spec.display} weights file (keras.applications layout, "
            f"include_top=False) for cnn.arch = {base_arch_name(spec)}: {exc}") from exc
    if spec.after_load is not None:
        spec.after_load(base)
    log.info("loaded %s weights from %s", spec.display, path)


def imagenet_weights(spec: CnnArch, image_size: int) -> Path:
    """Path of the arch's ImageNet no-top weights in the Keras cache, downloading if needed.

    MobileNetV2 has one file per input size (96, 128, 160, 192, 224 px). When the file of this
    size is not in the cache but the 224 px one is, that one is used: its convolutions load into
    any input size, and no network is needed. Otherwise the file of this size is downloaded.
    """
    from vitbench.core.errors import FetchError
    from vitbench.models.weights import cached_download, keras_home

    name, fallback = spec.weights_name(image_size), spec.weights_name(224)
    cached = keras_home() / "models"
    if name != fallback and not (cached / name).is_file() and (cached / fallback).is_file():
        log.info("%s: %s is not in %s; using the 224 px ImageNet weights %s for %d px inputs",
                 spec.display, name, cached, fallback, image_size)
        return cached / fallback
    if image_size != spec.weights_size(image_size):
        log.info("%s has no ImageNet weights for %d px; using the %d px ones", spec.display,
                 image_size, spec.weights_size(image_size))
    try:
        return cached_download(name, spec.weights_url + name, "models", file_hash=spec.file_hash)
    except FetchError as exc:
        if name == fallback:
            raise
        raise type(exc)(f"{exc} (or copy the 224 px file {fallback} there: it fits any "
                        "size)") from exc   # a NetworkError stays one: auto may go random


def resolve_weights(weights: str, sha256: str | None, spec: CnnArch, image_size: int) -> Path:
    """The local file `cnn.weights` names: "imagenet" -> the Keras cache (downloading when
    online), an http(s) URL -> downloaded once into `$KERAS_HOME/models` (checked against
    `sha256` when given), else an existing local .h5 file (checked against `sha256` too): a
    WeightsFileError naming it when it is missing or fails its checksum."""
    from vitbench.models.weights import (WeightsFileError, cached_download, file_digest,
                                         url_file_name)

    if weights == "imagenet":
        return imagenet_weights(spec, image_size)
    if weights.startswith(("http://", "https://")):
        return cached_download(url_file_name(weights), weights, "models", file_hash=sha256)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsFileError(f"cnn.weights: {weights} does not exist (expected imagenet, an "
                               f"http(s) URL or a no-top {spec.display} .h5 weights file)")
    if sha256 is not None and (found := file_digest(path, sha256)) != sha256.lower():
        raise WeightsFileError(f"cnn.weights: {path} fails its checksum: its sha256 is {found}, "
                               f"cnn.weights_sha256 = {sha256}")
    return path


# --- what trains in each phase -------------------------------------------------------------------

def freeze_base(model: keras.Model, trainable: bool) -> None:
    """Layer "base" follows `trainable`; its BatchNormalization layers stay frozen, hence in
    inference mode: Keras 3 lets `fit`'s training=True override the training=False the base is
    called with (keras-team/keras#20285), and only a frozen BatchNormalization ignores it."""
    base = model.get_layer("base")
    base.trainable = trainable
    for layer in base.layers:  # keras.applications bases are flat
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def train_base_from_scratch(model: keras.Model) -> int:
    """Make a randomly initialised CNN's whole base trainable, BatchNormalization included.

    Without pretrained weights there is nothing to transfer: a frozen random base hands its head
    next to nothing (the offline demo's MobileNetV2 stayed at 15% on 10 classes, even with its
    BatchNorm statistics re-estimated). So the first phase trains the network from scratch.
    BatchNormalization runs in training mode with momentum 0.9, so its moving statistics catch up
    within a few epochs (keras.applications' 0.999 needs thousands of steps; with it validation
    stays at chance while training accuracy climbs). Returns the number of BatchNorm layers.
    """
    base = model.get_layer("base")
    base.trainable = True
    layers = [layer for layer in _all_layers(base)
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.trainable = True
        layer.momentum = SCRATCH_BN_MOMENTUM
    log.info("random weights: nothing to transfer, so the whole %s trains from scratch "
             "(BatchNorm momentum %.1f)", base.name, SCRATCH_BN_MOMENTUM)
    return len(layers)


def _all_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer inside `model`, nested models included."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found
