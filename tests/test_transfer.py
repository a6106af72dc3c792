"""Real transfer learning: `cnn.weights`, the Keras cache, wrong files, URL downloads, and the
frozen-base feature cache, with the real ImageNet MobileNetV2 weights where they are present."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO
from test_models_cnn import randomised_base, write_keras_h5
from test_training import assert_trained, project, tiny_params, train_stage  # noqa: F401 (fixture)

from vitbench.train import features, phases as training
from vitbench.models import registry
from vitbench.models.registry import params_with
from vitbench.core.errors import ConfigError, FetchError
from vitbench.models import WeightsFileError, resolve_pretrained
from vitbench.models.store import load_model
from vitbench.models.cnn import archs as cnn_archs, builder as cnn_builder
from vitbench.models.weights import cached_download, url_file_name

REAL_WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_1.0_224_no_top.h5"
SIZE = 32


@pytest.fixture
def real_weights() -> Path:
    """The real ImageNet MobileNetV2 no-top weights; the test is skipped where they are absent."""
    if not REAL_WEIGHTS.is_file():
        pytest.skip(f"{REAL_WEIGHTS} not present")
    return REAL_WEIGHTS


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """MobileNetV2's weights server is a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    import dataclasses

    spec = dataclasses.replace(cnn_archs.ARCHS["mobilenetv2"], weights_url=f"http://127.0.0.1:{port}/")
    monkeypatch.setitem(cnn_archs.ARCHS, "mobilenetv2", spec)


def keras_reference(path: Path, size: int) -> keras.Model:
    """keras.applications' own MobileNetV2 loaded from `path`."""
    return keras.applications.MobileNetV2(include_top=False, weights=str(path),
                                          input_shape=(size, size, 3))


def assert_base_is(model: keras.Model, reference: keras.Model) -> None:
    ours = model.get_layer("base").weights
    assert len(ours) == len(reference.weights)
    for mine, theirs in zip(ours, reference.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


# --- where pretrained: auto finds the weights -------------------------------------------------------

@pytest.mark.slow
def test_auto_finds_the_real_weights_through_cnn_weights(real_weights: Path, offline: None) -> None:
    model, used = resolve_pretrained("auto", "MobileNetV2", lambda: cnn_builder.build_cnn(
        "mobilenetv2", SIZE, 3, 0.2, weights=str(real_weights)))
    assert used is True
    assert_base_is(model, keras_reference(real_weights, SIZE))


@pytest.mark.slow
def test_auto_finds_the_real_weights_in_the_keras_cache(real_weights: Path, offline: None,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """96 px: Keras' 96 px file is absent, the 224 px one (the real file) is used, offline."""
    spec = cnn_archs.ARCHS["mobilenetv2"]
    cache = Path(os.environ["KERAS_HOME"]) / "models"
    cache.mkdir(parents=True)
    (cache / spec.weights_name(224)).symlink_to(real_weights)
    with caplog.at_level(logging.INFO, logger="vitbench.models.cnn.builder"):
        model, used = resolve_pretrained("auto", "MobileNetV2", lambda: cnn_builder.build_cnn(
            "mobilenetv2", 96, 3, 0.2, weights="imagenet"))
    assert used is True
    assert f"using the 224 px ImageNet weights {spec.weights_name(224)} for 96 px" in caplog.text
    assert_base_is(model, keras_reference(real_weights, 96))

    # a size-specific file, when present, wins over the 224 px one
    own = write_keras_h5(randomised_base("mobilenetv2", seed=7), cache / spec.weights_name(96))
    model = cnn_builder.build_cnn("mobilenetv2", 96, 3, 0.2, weights="imagenet")
    assert_base_is(model, keras_reference(own, 96))


def test_offline_hint_names_both_cache_files(offline: None) -> None:
    spec = cnn_archs.ARCHS["mobilenetv2"]
    with pytest.raises(FetchError) as info:
        cnn_builder.imagenet_weights(spec, 96)
    assert spec.weights_name(96) in str(info.value) and spec.weights_name(224) in str(info.value)


# --- files that do not fit -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vgg16", "random_bytes", "with_top"])
def test_a_wrong_weights_file_is_an_error_naming_file_and_arch(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.h5"
    if kind == "vgg16":
        write_keras_h5(keras.applications.VGG16(include_top=False, weights=None,
                                                input_shape=(SIZE, SIZE, 3)), path)
    elif kind == "with_top":
        write_keras_h5(keras.applications.MobileNetV2(include_top=True, weights=None,
                                                      input_shape=(SIZE, SIZE, 3)), path)
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    for setting in ("auto", True):  # a file the user named is never silently replaced by random
        with pytest.raises(WeightsFileError, match=f"{path}.*MobileNetV2.*cnn.arch = mobilenetv2"):
            resolve_pretrained(setting, "MobileNetV2", lambda: cnn_builder.build_cnn(
                "mobilenetv2", SIZE, 3, 0.2, weights=str(path)))


@pytest.mark.slow
def test_local_file_sha256_is_checked_even_with_auto(tmp_path: Path) -> None:
    path = write_keras_h5(randomised_base("mobilenetv2"), tmp_path / "w.h5")
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    cnn_builder.build_cnn("mobilenetv2", SIZE, 3, 0.2, weights=str(path), weights_sha256=good)
    for setting in ("auto", True):   # a named file that fails its checksum never goes random
        with pytest.raises(WeightsFileError, match=f"cnn.weights: {path} fails its checksum: its "
                                                   f"sha256 is {good}, cnn.weights_sha256 = 0000"):
            resolve_pretrained(setting, "MobileNetV2", lambda: cnn_builder.build_cnn(
                "mobilenetv2", SIZE, 3, 0.2, weights=str(path), weights_sha256="0" * 64))


# --- downloads through vitbench.data.sources.download ---------------------------------------------------

@pytest.mark.slow
def test_weights_url_is_downloaded_once_and_checked(server, tmp_path: Path) -> None:  # noqa: ANN001
    reference = randomised_base("mobilenetv2", seed=3)
    body = write_keras_h5(reference, tmp_path / "w.h5").read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    server.routes["/w/mnv2.h5"] = [(503, b"busy"), (200, body)]   # one retry, then the file
    url = f"{server.url}/w/mnv2.h5"
    for _ in range(2):
        model = cnn_builder.build_cnn("mobilenetv2", SIZE, 3, 0.2, weights=url, weights_sha256=sha)
        assert_base_is(model, reference)
    assert server.hits["/w/mnv2.h5"] == 2                          # 503 + 200, then the cache
    cached = Path(os.environ["KERAS_HOME"]) / "models" / url_file_name(url)
    assert cached.read_bytes() == body and cached.name.endswith("-mnv2.h5")

    server.routes["/w/other.h5"] = [(200, body)]
    other = f"{server.url}/w/other.h5"
    with pytest.raises(WeightsFileError, match=f"{other} fails its checksum: expected 1111.*got {sha}"):
        resolve_pretrained("auto", "MobileNetV2", lambda: cnn_builder.build_cnn(
            "mobilenetv2", SIZE, 3, 0.2, weights=other, weights_sha256="1" * 64))
    assert not list(cached.parent.glob("*other.h5"))                # nothing kept
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]


def test_cached_download_checks_keras_md5(server) -> None:  # noqa: ANN001
    server.routes["/f.h5"] = [(200, b"abc")]
    md5 = hashlib.md5(b"abc").hexdigest()  # noqa: S324 - Keras' file hashes are md5
    assert cached_download("f.h5", f"{server.url}/f.h5", "models", md5).read_bytes() == b"abc"
    server.routes["/g.h5"] = [(200, b"abc")]
    with pytest.raises(WeightsFileError, match=f"g.h5 fails its checksum: expected 0{{32}}, got {md5}"):
        cached_download("g.h5", f"{server.url}/g.h5", "models", "0" * 32)


def test_vit_weights_urls_use_the_same_download(server) -> None:  # noqa: ANN001
    from vitbench.models.vit_ft.builder import resolve_vit_weights

    server.routes["/vit/ViT-B_32_custom.npz"] = [(500, b"oops"), (200, b"npz bytes")]
    url = f"{server.url}/vit/ViT-B_32_custom.npz"
    path = resolve_vit_weights(url, "b32")
    assert path.read_bytes() == b"npz bytes" and path.parent.name == "weights"
    assert resolve_vit_weights(url, "b32") == path
    assert server.hits["/vit/ViT-B_32_custom.npz"] == 2               # a retry, then the cache


@pytest.mark.parametrize(("cnn_cfg", "key"), [
    ({"weights": "weights.txt"}, "cnn.weights"),
    ({"weights": "https://host/"}, "cnn.weights"),
    ({"weights": "x.h5", "weights_sha256": "abc"}, "cnn.weights_sha256"),
    ({"weights": "imagenet", "weights_sha256": "a" * 64}, "cnn.weights_sha256"),
    ({"feature_cache": "maybe"}, "cnn.feature_cache"),
])
def test_cnn_weights_params_are_validated(cnn_cfg: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        params_with({"cnn": cnn_cfg})


def test_cnn_weights_params_accept_path_and_url() -> None:
    params = params_with({"cnn": {"weights": "https://h/w.h5", "weights_sha256": "A" * 64}})
    assert params.cnn.weights == "https://h/w.h5" and params.cnn.feature_cache is True
    assert params_with({"cnn": {"weights": "/no/such/file.h5"}}).cnn.weights.endswith(".h5")


# --- the feature cache ------------------------------------------------------------------------------------

def test_cache_decision_says_why(caplog: pytest.LogCaptureFixture) -> None:
    on, off = SimpleNamespace(feature_cache=True), SimpleNamespace(feature_cache=False)
    with caplog.at_level(logging.INFO, logger="vitbench.train.features"):
        assert features.use_feature_cache(on, pretrained=True)
        assert not features.use_feature_cache(off, pretrained=True)
        assert not features.use_feature_cache(on, pretrained=False)
        assert not features.use_feature_cache(on, pretrained=True, online=True)
    assert "feature cache ON" in caplog.text
    for reason in ("cnn.feature_cache is false", "no pretrained weights", "online augmentation is on"):
        assert reason in caplog.text


@pytest.mark.slow   # a subprocess or a model build
def test_head_on_features_sees_every_image_once_with_its_label() -> None:
    keras.utils.set_random_seed(0)
    model = cnn_builder.build_cnn("mobilenetv2", SIZE, 3, 0.5)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (10, SIZE, SIZE, 3)).astype("float32")
    y = np.arange(10, dtype="int32")  # a unique label per image identifies it
    shuffled = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(10, seed=1).batch(4)
    head = features.head_on_features(model, shuffled, shuffled, batch_size=4, seed=0,
                                     layers=("dropout", "head"))
    feats, labels = features.pooled_features(head.model, head.train.unbatch().batch(10))
    assert sorted(labels.tolist()) == list(range(10)) and head.images == 20
    pooled = keras.Model(model.input, model.get_layer("pool").output).predict(x, verbose=0)
    cached = np.concatenate([f for f, _ in head.train.unbatch().batch(10).as_numpy_iterator()])
    order = np.concatenate([lab for _, lab in head.train.unbatch().batch(10).as_numpy_iterator()])
    np.testing.assert_allclose(cached, pooled[order], rtol=1e-5, atol=1e-6)
    # the head is the model's own: same layer names, config and weights; its output is the model's
    assert [layer.name for layer in head.model.layers[1:]] == list(registry.family("cnn").head_layers)
    assert head.model.get_layer("dropout").rate == 0.5
    np.testing.assert_allclose(head.model.predict(pooled, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert feats.shape == (10, 3)


@pytest.mark.slow
@pytest.mark.parametrize("feature_cache", [True, False])
def test_real_transfer_trains_only_the_head_then_finetunes_from_it(
        project, real_weights: Path, monkeypatch: pytest.MonkeyPatch, feature_cache: bool,
        caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    """Frozen phase: only the head changes, BatchNorm statistics stay; fine-tuning starts from the
    saved transfer model; both saved models reload to identical predictions."""
    x = np.random.default_rng(4).uniform(-1, 1, (6, SIZE, SIZE, 3)).astype("float32")
    at_finetune: dict[str, object] = {}
    original = training.train_phase

    def spy(model, model_id, *args, **kwargs):  # noqa: ANN001, ANN202
        if model_id == "cnn_finetuned":
            at_finetune.update(model=model, weights=[w.copy() for w in model.get_weights()],
                               predictions=model.predict(x, verbose=0))
        return original(model, model_id, *args, **kwargs)

    monkeypatch.setattr(training, "train_phase", spy)
    params = tiny_params(train={"epochs": 2, "patience": 5},
                         cnn={"pretrained": "auto", "weights": str(real_weights),
                              "feature_cache": feature_cache})
    with caplog.at_level(logging.INFO):
        train_stage("cnn", params, project)
    assert ("feature cache ON" in caplog.text) is feature_cache
    transfer = assert_trained(project, "cnn_transfer", epochs=2, pretrained=True)
    assert_trained(project, "cnn_finetuned", epochs=2, pretrained=True)
    assert ("feature_cache" in transfer) is feature_cache
    assert transfer["params_trainable"] == (1280 + 1) * 3

    reference = cnn_builder.build_cnn("mobilenetv2", SIZE, 3, 0.2, weights=str(real_weights))
    saved, _ = load_model(project.model("cnn_transfer"))
    for ours, ref in zip(saved.get_layer("base").weights, reference.get_layer("base").weights):
        np.testing.assert_array_equal(ours.numpy(), ref.numpy(), err_msg=ours.path)  # BN stats too
    assert not np.allclose(saved.get_layer("head").get_weights()[0],
                           reference.get_layer("head").get_weights()[0])

    # fine-tuning started from exactly the saved transfer model
    for started, kept in zip(at_finetune["weights"], saved.get_weights()):
        np.testing.assert_array_equal(started, kept)
    np.testing.assert_array_equal(saved.predict(x, verbose=0), at_finetune["predictions"])
    finetuned, _ = load_model(project.model("cnn_finetuned"))
    np.testing.assert_array_equal(finetuned.predict(x, verbose=0),
                                  at_finetune["model"].predict(x, verbose=0))
    base_moved = any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(
        finetuned.get_layer("base").trainable_weights, reference.get_layer("base").trainable_weights))
    assert base_moved                                               # the base fine-tuned...
    for layer in finetuned.get_layer("base").layers:                # ...its BatchNorm stats did not
        if isinstance(layer, keras.layers.BatchNormalization):
            ref = reference.get_layer("base").get_layer(layer.name)
            np.testing.assert_array_equal(layer.moving_mean.numpy(), ref.moving_mean.numpy())
            np.testing.assert_array_equal(layer.moving_variance.numpy(), ref.moving_variance.numpy())


@pytest.mark.slow
def test_vit_head_on_features_reads_the_class_token() -> None:
    """The pretrained ViT's cache: features are the head's input (the class token after the
    encoder norm), the head is its Dense "head", and head(features) is the model's output."""
    from vitbench.models.vit_ft import builder as pretrained_vit

    keras.utils.set_random_seed(0)
    tiny = {"num_layers": 1, "hidden_size": 16, "mlp_dim": 32, "num_heads": 2, "dropout": 0.0}
    model = pretrained_vit.build_vit_ft("ti16", 32, 3, config=tiny)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 32, 32, 3)).astype("float32")
    y = np.arange(6, dtype="int32") % 3
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    head = features.head_on_features(model, data, data, batch_size=4, seed=0, layers=("head",))
    assert [layer.name for layer in head.model.layers[1:]] == ["head"] and head.images == 12
    tokens = np.concatenate([f for f, _ in head.val.as_numpy_iterator()])
    assert tokens.shape == (6, 16)
    np.testing.assert_allclose(head.model.predict(tokens, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    head.model.get_layer("head").set_weights([w * 0 for w in head.model.get_layer("head").get_weights()])
    head.copy_to(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), 1 / 3, rtol=1e-5)
