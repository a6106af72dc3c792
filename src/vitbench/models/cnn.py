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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from vitbench.core.errors import ConfigError

log = logging.getLogger(__name__)

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def _fold_efficientnet_stddev(base: keras.Model) -> None:
    """keras.applications.EfficientNet adds, only when built with weights="imagenet", a
    Rescaling by 1/sqrt(stddev) after its Normalization layer. Built with weights=None (so that
    the architecture never depends on the weights), the same result is had by multiplying the
    Normalization variance by stddev: (x - m) / sqrt(v * s) == (x - m) / sqrt(v) / sqrt(s)."""
    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    variance = norm.adapt_variance  # the stored variable; norm.variance is derived from it
    variance.assign(variance * np.asarray(IMAGENET_STDDEV_RGB, dtype=variance.dtype))
    norm.finalize_state()


@dataclass(frozen=True)
class CnnArch:
    """One keras.applications architecture; adding an arch is one entry in ARCHS."""

    constructor: Callable[..., keras.Model]
    preprocess: str          # key of vitbench.data.pipeline.PREPROCESS
    display: str             # human name, e.g. "MobileNetV2"
    weights_file: str        # the no-top ImageNet file Keras uses; "{size}" = weights_size()
    weights_url: str         # folder URL of that file
    file_hash: str | None = None               # as in keras.applications (md5)
    weights_sizes: tuple[int, ...] = ()        # image sizes with their own weights file
    after_load: Callable[[keras.Model], None] | None = None  # fix-up after loading ImageNet weights

    def weights_size(self, image_size: int) -> int:
        """The input size whose weights Keras would load (224 unless the size has its own)."""
        return image_size if image_size in self.weights_sizes else 224

    def weights_name(self, image_size: int) -> str:
        """File name of the ImageNet weights in the Keras cache."""
        return self.weights_file.format(size=self.weights_size(image_size))


ARCHS: dict[str, CnnArch] = {
    "mobilenetv2": CnnArch(
        keras.applications.MobileNetV2, "mobilenet_v2", "MobileNetV2",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
        KERAS_WEIGHTS_URL + "mobilenet_v2/", weights_sizes=(96, 128, 160, 192, 224)),
    "vgg16": CnnArch(
        keras.applications.VGG16, "vgg16", "VGG16",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        KERAS_WEIGHTS_URL + "vgg16/", file_hash="6d6bbae143d832006294945121d1f1fc"),
    "resnet50": CnnArch(
        keras.applications.ResNet50, "resnet50", "ResNet50",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        KERAS_WEIGHTS_URL + "resnet/", file_hash="4d473c1dd8becc155b73f8504c6f6626"),
    "efficientnetb0": CnnArch(
        keras.applications.EfficientNetB0, "efficientnet", "EfficientNetB0",
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/",
        file_hash="50bc09e76180e00e4465e1a485ddc09d", after_load=_fold_efficientnet_stddev),
}


def get_arch(arch: str) -> CnnArch:
    """The registry entry of `arch`, or a ConfigError naming the allowed values."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ConfigError("cnn.arch", arch, f"one of {', '.join(ARCHS)}") from None


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


def base_arch_name(spec: CnnArch) -> str:
    """The `cnn.arch` key of a registry entry."""
    return next(name for name, entry in ARCHS.items() if entry == spec)


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
