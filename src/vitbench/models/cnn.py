"""The CNN baseline: a keras.applications base (frozen or not) under a new classification head.

The model follows the Keras transfer-learning guide: Input -> base (named "base", called with
training=False so its BatchNorm layers stay in inference mode even when unfrozen) ->
GlobalAveragePooling2D -> Dropout -> Dense softmax "head" (float32, so mixed precision is safe).

ImageNet weights are the files keras.applications itself downloads, fetched through
`vitbench.models.cached_download` into the Keras cache (`$KERAS_HOME/models`), so a file already
there is used without any network and an offline machine fails fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from vitbench.errors import ConfigError

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
              weights: str | None = None) -> keras.Model:
    """Base + new head. `weights`: None (random), "imagenet" (Keras cache or download) or the
    path of a keras.applications no-top .h5 file."""
    spec = get_arch(arch)
    shape = (image_size, image_size, 3)
    base = spec.constructor(include_top=False, weights=None, input_shape=shape, name="base")
    if weights is not None:
        load_base_weights(base, spec, image_size, weights)
    inputs = keras.Input(shape, name="image")
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name=f"cnn_{arch}")


def load_base_weights(base: keras.Model, spec: CnnArch, image_size: int, weights: str) -> None:
    """Load ImageNet (or a given .h5 file's) weights into a base built with weights=None."""
    path = imagenet_weights(spec, image_size) if weights == "imagenet" else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"CNN weights file {path} does not exist")
    base.load_weights(path)
    if spec.after_load is not None:
        spec.after_load(base)
    log.info("loaded %s weights from %s", spec.display, path)


def imagenet_weights(spec: CnnArch, image_size: int) -> Path:
    """Path of the arch's ImageNet no-top weights in the Keras cache, downloading if needed."""
    from vitbench.models import cached_download

    if image_size != spec.weights_size(image_size):
        log.info("%s has no ImageNet weights for %d px; using the %d px ones", spec.display,
                 image_size, spec.weights_size(image_size))
    name = spec.weights_name(image_size)
    return cached_download(name, spec.weights_url + name, "models", file_hash=spec.file_hash)
