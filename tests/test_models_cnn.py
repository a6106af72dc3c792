"""The CNN builder and its ImageNet weights files, checked against keras.applications itself."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from vitbench.models.cnn.archs import ARCHS

CNN_ARCHS = tuple(ARCHS)
from vitbench.core.errors import ConfigError, VitbenchError
from vitbench.models import WeightsFileError, keras_home, resolve_pretrained
from vitbench.models.store import set_backbone_trainable
from vitbench.models.cnn import archs as cnn_archs, builder as cnn_builder

SIZE = 32


def write_keras_h5(model: keras.Model, path: Path) -> Path:
    """Save weights in the legacy .h5 layout keras.applications ships its ImageNet files in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def randomised_base(arch: str, seed: int = 0) -> keras.Model:
    """A weights=None base whose every variable (BatchNorm/Normalization stats too) is random."""
    base = cnn_archs.ARCHS[arch].constructor(include_top=False, weights=None,
                                       input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(seed)
    for var in base.weights:
        if "count" in var.path:  # Normalization's sample count
            continue
        positive = any(k in var.path for k in ("variance", "gamma"))
        low, high = (0.5, 1.5) if positive else (-0.05, 0.05)
        var.assign(rng.uniform(low, high, var.shape).astype(var.dtype))
    return base


def test_registry_matches_config_archs() -> None:
    assert CNN_ARCHS == ("mobilenetv2", "vgg16", "resnet50", "efficientnetb0", "efficientnetv2b0")
    assert {a.display for a in cnn_archs.ARCHS.values()} == {"MobileNetV2", "VGG16", "ResNet50", "EfficientNetV2-B0",
                                                       "EfficientNetB0"}


def test_unknown_arch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cnn.arch.*alexnet.*mobilenetv2"):
        cnn_builder.build_cnn("alexnet", SIZE, 3, 0.2)


def assert_cnn_structure(model: keras.Model, num_classes: int, dropout: float) -> None:
    """Input -> base -> pooling -> dropout -> float32 softmax head, probabilities out."""
    base, head = model.get_layer("base"), model.get_layer("head")
    assert isinstance(base, keras.Model)
    assert [type(layer).__name__ for layer in model.layers[2:]] == [
        "GlobalAveragePooling2D", "Dropout", "Dense"]
    assert model.get_layer("dropout").rate == dropout
    assert head.dtype_policy.compute_dtype == "float32" and head.activation.__name__ == "softmax"
    probs = model.predict(np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)), verbose=0)
    assert probs.shape == (2, num_classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_build_cnn_random_weights() -> None:
    model = cnn_builder.build_cnn("mobilenetv2", SIZE, num_classes=5, dropout=0.3)
    assert_cnn_structure(model, 5, 0.3)
    assert model.count_params() > 2_000_000


@pytest.mark.slow
def test_base_batchnorm_stays_in_inference_mode_when_unfrozen() -> None:
    """Fine-tuning (base unfrozen) must not move the BatchNorm statistics, though fit passes
    training=True (which in Keras 3 overrides the training=False the base is called with)."""
    model = cnn_builder.build_cnn("mobilenetv2", SIZE, num_classes=2, dropout=0.0)
    set_backbone_trainable(model, "cnn", True)
    bn = next(layer for layer in model.get_layer("base").layers
              if isinstance(layer, keras.layers.BatchNormalization))
    before = bn.moving_mean.numpy().copy()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 0, 1]))
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)
    conv = model.get_layer("base").get_layer("Conv1")
    assert conv.trainable and not bn.trainable


@pytest.mark.slow
@pytest.mark.parametrize("arch", CNN_ARCHS)
def test_weights_file_equals_keras_applications_imagenet(arch: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """build_cnn(weights=<file>) gives exactly the base keras.applications builds with
    weights="imagenet" from the same file, and the registry names the same file, URL and hash."""
    spec = cnn_archs.ARCHS[arch]
    weights = write_keras_h5(randomised_base(arch), tmp_path / spec.weights_name(SIZE))
    asked: dict[str, object] = {}

    def fake_get_file(fname: str, origin: str, cache_subdir: str = "datasets",
                      file_hash: str | None = None, **_: object) -> str:
        asked.update(fname=fname, origin=origin, subdir=cache_subdir, file_hash=file_hash)
        return str(weights)

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", fake_get_file)
    reference = spec.constructor(include_top=False, weights="imagenet", input_shape=(SIZE, SIZE, 3))
    assert asked == {"fname": spec.weights_name(SIZE), "origin": spec.weights_url + asked["fname"],
                     "subdir": "models", "file_hash": spec.file_hash}

    model = cnn_builder.build_cnn(arch, SIZE, num_classes=3, dropout=0.1, weights=str(weights))
    assert_cnn_structure(model, 3, 0.1)
    x = np.random.default_rng(2).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    ours = model.get_layer("base")(x, training=False)
    np.testing.assert_allclose(ours, reference(x, training=False), rtol=1e-4, atol=1e-5)


def test_mobilenet_weights_file_follows_image_size() -> None:
    spec = cnn_archs.ARCHS["mobilenetv2"]
    assert spec.weights_name(96).endswith("_1.0_96_no_top.h5")
    assert spec.weights_name(72).endswith("_1.0_224_no_top.h5")  # no 72 px file: Keras uses 224


def test_missing_weights_file_is_an_error_even_with_auto(tmp_path: Path) -> None:
    """A file the user named and that is not there is not "the network may be missing"."""
    missing = str(tmp_path / "nope.h5")
    for setting in ("auto", True):
        with pytest.raises(WeightsFileError, match=f"cnn.weights: {missing} does not exist"):
            resolve_pretrained(setting, "MobileNetV2 weights", lambda: cnn_builder.build_cnn(
                "mobilenetv2", SIZE, 3, 0.2, weights=missing))


# --- pretrained: auto | true | false -----------------------------------------------------------------

@pytest.fixture
def offline_mobilenet(monkeypatch: pytest.MonkeyPatch) -> cnn_archs.CnnArch:
    """MobileNetV2 whose weights server is a loopback port nobody listens on (= offline)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = dataclasses.replace(cnn_archs.ARCHS["mobilenetv2"], weights_url=f"http://127.0.0.1:{port}/")
    monkeypatch.setitem(cnn_archs.ARCHS, "mobilenetv2", spec)
    return spec


def load_imagenet_mobilenet() -> keras.Model:
    return cnn_builder.build_cnn("mobilenetv2", SIZE, num_classes=3, dropout=0.2, weights="imagenet")


def test_pretrained_false_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for setting in (False, "false"):
        assert resolve_pretrained(setting, "MobileNetV2 weights", load_imagenet_mobilenet) == (None, False)


@pytest.mark.parametrize("size", [SIZE, 96])   # 96 px: its own file, else the 224 px one
def test_pretrained_auto_offline_warns_and_goes_random(offline_mobilenet: cnn_archs.CnnArch, size: int,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vitbench.models"):
        model, used = resolve_pretrained("auto", "MobileNetV2 ImageNet weights", lambda: cnn_builder.build_cnn(
            "mobilenetv2", size, num_classes=3, dropout=0.2, weights="imagenet"))
    assert (model, used) == (None, False)
    # refused by the reachability check, before any download: nothing left in the Keras cache
    cache = keras_home() / "models"
    assert not (cache.is_dir() and any(cache.iterdir()))
    assert "MobileNetV2 ImageNet weights could not be downloaded (cannot reach 127.0.0.1" \
        in caplog.text and "RANDOM weights" in caplog.text
    assert "pretrained: false" in caplog.text


def test_pretrained_true_offline_is_an_error_that_says_what_to_do(offline_mobilenet: cnn_archs.CnnArch) -> None:
    cache = Path(os.environ["KERAS_HOME"]) / "models" / offline_mobilenet.weights_name(SIZE)
    with pytest.raises(VitbenchError, match="pretrained: true") as info:
        resolve_pretrained(True, "MobileNetV2 ImageNet weights", load_imagenet_mobilenet)
    assert f"copy {cache.name} to {cache}" in str(info.value)


@pytest.mark.slow
def test_pretrained_auto_uses_the_keras_cache_without_network(offline_mobilenet: cnn_archs.CnnArch) -> None:
    reference = randomised_base("mobilenetv2", seed=5)
    write_keras_h5(reference, Path(os.environ["KERAS_HOME"]) / "models"
                   / offline_mobilenet.weights_name(SIZE))
    model, used = resolve_pretrained("auto", "MobileNetV2 ImageNet weights", load_imagenet_mobilenet)
    assert used is True
    for ours, theirs in zip(model.get_layer("base").weights, reference.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
