"""The keras.applications architectures `cnn.arch` names: adding one is one `CnnArch` entry in ARCHS.

An entry says how to build the base (`constructor`, always with weights=None: the architecture
never depends on the weights; `later("keras.applications:Name")` keeps Keras unimported until a
model is built), how its inputs are scaled (`preprocess`, a key of
`vitbench.data.pipeline.PREPROCESS`: "tf" for [-1, 1], "caffe" for BGR minus the ImageNet mean,
"raw" for a model that rescales inside), its display name and where Keras publishes its no-top
ImageNet weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitbench.core.errors import ConfigError
from vitbench.models.family import later

if TYPE_CHECKING:   # the constructors are named with `later`: reading ARCHS starts no TensorFlow
    import keras

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class CnnArch:
    """One keras.applications architecture; adding an arch is one entry in ARCHS."""

    constructor: Callable[..., keras.Model]
    preprocess: str          # a key of vitbench.data.pipeline.PREPROCESS
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
        later("keras.applications:MobileNetV2"), "tf", "MobileNetV2",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
        KERAS_WEIGHTS_URL + "mobilenet_v2/", weights_sizes=(96, 128, 160, 192, 224)),
    "vgg16": CnnArch(
        later("keras.applications:VGG16"), "caffe", "VGG16",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        KERAS_WEIGHTS_URL + "vgg16/", file_hash="6d6bbae143d832006294945121d1f1fc"),
    "resnet50": CnnArch(
        later("keras.applications:ResNet50"), "caffe", "ResNet50",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        KERAS_WEIGHTS_URL + "resnet/", file_hash="4d473c1dd8becc155b73f8504c6f6626"),
    "efficientnetb0": CnnArch(
        later("keras.applications:EfficientNetB0"), "raw", "EfficientNetB0",
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/",
        file_hash="50bc09e76180e00e4465e1a485ddc09d",
        after_load=later("vitbench.models.cnn.bases:fold_efficientnet_stddev")),
    "efficientnetv2b0": CnnArch(
        later("vitbench.models.cnn.bases:efficientnetv2b0"), "raw", "EfficientNetV2-B0",
        "efficientnetv2-b0_notop.h5", KERAS_WEIGHTS_URL + "efficientnet_v2/",
        file_hash="893217f2bb855e2983157299931e43ff"),
}


def get_arch(arch: str) -> CnnArch:
    """The registry entry of `arch`, or a ConfigError naming the allowed values."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ConfigError("cnn.arch", arch, f"one of {', '.join(ARCHS)}") from None


def base_arch_name(spec: CnnArch) -> str:
    """The `cnn.arch` key of a registry entry."""
    return next(name for name, entry in ARCHS.items() if entry == spec)


