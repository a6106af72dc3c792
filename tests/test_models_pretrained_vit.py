"""vit-keras ViT-B under a new head: flat model, Flax .npz weights from disk and over HTTP."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from vit_keras import visualize
from vit_keras import vit as vit_keras

from vitbench.core.errors import ConfigError, DataError, FetchError
from vitbench.models.vit_ft import builder as pv

TINY = {"num_layers": 2, "hidden_size": 16, "mlp_dim": 32, "num_heads": 2, "dropout": 0.0}
SIZE = 32  # b16 -> a 2x2 patch grid


def flax_params(config: dict, grid: int, patch: int = 16, representation: int | None = None,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights in the vit-keras/Flax checkpoint layout (what load_weights_numpy reads)."""
    rng = np.random.default_rng(seed)
    d, m, h = config["hidden_size"], config["mlp_dim"], config["num_heads"]

    def r(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.1, shape).astype("float32")

    params = {"embedding/kernel": r(patch, patch, 3, d), "embedding/bias": r(d), "cls": r(1, 1, d),
              "Transformer/posembed_input/pos_embedding": r(1, grid * grid + 1, d),
              "Transformer/encoder_norm/scale": r(d), "Transformer/encoder_norm/bias": r(d),
              "head/kernel": r(representation or d, 7), "head/bias": r(7)}
    if representation:
        params.update({"pre_logits/kernel": r(d, representation), "pre_logits/bias": r(representation)})
    for i in range(config["num_layers"]):
        block = f"Transformer/encoderblock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            params.update({f"{block}/{norm}/scale": r(d), f"{block}/{norm}/bias": r(d)})
        mlp = f"{block}/MlpBlock_3"
        params.update({f"{mlp}/Dense_0/kernel": r(d, m), f"{mlp}/Dense_0/bias": r(m),
                       f"{mlp}/Dense_1/kernel": r(m, d), f"{mlp}/Dense_1/bias": r(d)})
        att = f"{block}/MultiHeadDotProductAttention_1"
        for name in ("query", "key", "value"):
            params.update({f"{att}/{name}/kernel": r(d, h, d // h), f"{att}/{name}/bias": r(h, d // h)})
        params.update({f"{att}/out/kernel": r(h, d // h, d), f"{att}/out/bias": r(d)})
    return params


def write_npz(path: Path, params: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **params)
    return path


def assert_loaded(model, params: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    """Every weight but the new head holds exactly one of the file's arrays (reshaped)."""
    block = model.get_layer("Transformer_encoderblock_1")
    np.testing.assert_array_equal(block.att.query_dense.kernel.numpy(),
                                  params["Transformer/encoderblock_1/MultiHeadDotProductAttention_1"
                                         "/query/kernel"].reshape(16, 16))
    np.testing.assert_array_equal(model.get_layer("embedding").kernel.numpy(), params["embedding/kernel"])
    np.testing.assert_array_equal(model.get_layer("class_token").cls.numpy(), params["cls"])
    by_size: dict[int, list[np.ndarray]] = {}
    for array in params.values():
        by_size.setdefault(array.size, []).append(array.reshape(-1))
    head = {id(w) for w in model.get_layer("head").weights}
    for w in model.weights:
        if id(w) in head:
            continue
        value = w.numpy().reshape(-1)
        assert any(np.array_equal(value, a) for a in by_size.get(value.size, [])), w.path


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served on a loopback port: (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nobody listens on: what an offline machine sees, without the network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/dl"


# --- the model ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_model_is_flat_with_a_float32_softmax_head() -> None:
    model = pv.build_vit_ft("b16", SIZE, num_classes=4, config=TINY)
    names = [layer.name for layer in model.layers]
    assert names[-1] == "head" and "Transformer_encoderblock_1" in names
    assert model.get_layer("head").dtype_policy.compute_dtype == "float32"
    x = np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    weights = pv.attention_weights(model, x)
    assert [w.shape for w in weights] == [(2, 2, 5, 5)] * 2  # 4 patches + class token
    image = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert visualize.attention_map(model, image).shape == (40, 40, 3)


def test_representation_size_adds_pre_logits() -> None:
    model = pv.build_vit_ft("b16", SIZE, num_classes=4, representation_size=12, config=TINY)
    assert model.get_layer("pre_logits").units == 12


def test_bad_variant_and_size() -> None:
    with pytest.raises(ConfigError, match="vit_ft.variant.*b8"):
        pv.build_vit_ft("b8", SIZE, 3, config=TINY)
    with pytest.raises(ValueError, match="multiple of the b32 patch size 32"):
        pv.build_vit_ft("b32", 48, 3, config=TINY)
    assert pv.variant_name("b32") == "ViT-B/32" and pv.variant_name("b16") == "ViT-B/16"


@pytest.mark.slow
def test_real_vit_b32_size() -> None:
    """The default config really is ViT-B/32: 12 blocks, 768 wide, ~88M parameters."""
    model = pv.build_vit_ft("b32", 64, num_classes=10)
    blocks = [layer for layer in model.layers if layer.name.startswith("Transformer_encoderblock_")]
    assert len(blocks) == 12 and model.get_layer("head").kernel.shape == (768, 10)
    assert 87_000_000 < model.count_params() < 88_500_000


# --- weights ----------------------------------------------------------------------------------------

def test_weights_from_disk_land_in_the_layers(tmp_path: Path) -> None:
    params = flax_params(TINY, grid=2)
    path = write_npz(tmp_path / "w.npz", params)
    model = pv.build_vit_ft("b16", SIZE, num_classes=4, weights_path=str(path), config=TINY)
    assert_loaded(model, params)


def test_fewer_blocks_take_the_files_first_blocks(tmp_path: Path) -> None:
    """`vit_ft.blocks: 2` on a 4-block file: the first two blocks, embedding and norm loaded;
    the file itself is not changed."""
    params = flax_params({**TINY, "num_layers": 4}, grid=2)
    path = write_npz(tmp_path / "deep.npz", params)
    before = path.read_bytes()
    model = pv.build_vit_ft("b16", SIZE, num_classes=4, weights_path=str(path),
                            config={k: v for k, v in TINY.items() if k != "num_layers"}, blocks=2)
    assert sum(layer.name.startswith("Transformer_encoderblock_") for layer in model.layers) == 2
    assert_loaded(model, {k: v for k, v in params.items()
                          if not k.startswith(("Transformer/encoderblock_2", "Transformer/encoderblock_3"))})
    assert path.read_bytes() == before
    assert pv.variant_name("b32", 6) == "ViT-B/32 (6 blocks)" and pv.variant_name("b32") == "ViT-B/32"
    with pytest.raises(ValueError, match="1 to 12"):
        pv.build_vit_ft("b16", SIZE, 4, blocks=13)
    with pytest.raises(ValueError, match="ViT-L/16 has 1 to 24"):
        pv.build_vit_ft("l16", SIZE, 4, blocks=25, config={"hidden_size": 16, "num_heads": 2})


def test_imagenet21k_style_weights_with_pre_logits(tmp_path: Path) -> None:
    params = flax_params(TINY, grid=2, representation=12)
    path = write_npz(tmp_path / "w21k.npz", params)
    assert pv.representation_size(path) == 12
    model = pv.build_vit_ft("b16", SIZE, 4, representation_size=pv.representation_size(path),
                            weights_path=str(path), config=TINY)
    np.testing.assert_array_equal(model.get_layer("pre_logits").kernel.numpy(), params["pre_logits/kernel"])
    assert pv.representation_size(write_npz(tmp_path / "w.npz", flax_params(TINY, 2))) is None


def test_position_embeddings_are_resized_to_the_patch_grid(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "w.npz", flax_params(TINY, grid=7))  # as if trained at 7x7 patches
    model = pv.build_vit_ft("b16", SIZE, num_classes=4, weights_path=str(path), config=TINY)
    pos = model.get_layer("Transformer_posembed_input").pe.numpy()
    assert pos.shape == (1, 5, 16)
    np.testing.assert_array_equal(pos[0, 0], np.load(path)["Transformer/posembed_input/pos_embedding"][0, 0])


@pytest.mark.slow
def test_weights_that_do_not_fit_are_a_data_error(tmp_path: Path) -> None:
    one_block = write_npz(tmp_path / "shallow.npz", flax_params({**TINY, "num_layers": 1}, grid=2))
    with pytest.raises(DataError, match="shallow.npz does not fit"):
        pv.build_vit_ft("b16", SIZE, 4, weights_path=str(one_block), config=TINY)
    wide = write_npz(tmp_path / "wide.npz", flax_params({**TINY, "hidden_size": 8}, grid=2))
    with pytest.raises(DataError, match="wide.npz does not fit"):
        pv.build_vit_ft("b16", SIZE, 4, weights_path=str(wide), config=TINY)
    junk = tmp_path / "page.npz"
    junk.write_text("<html>rate limited</html>")
    with pytest.raises(DataError, match="page.npz is not a readable .npz"):
        pv.representation_size(junk)
    with pytest.raises(DataError, match="page.npz is not a readable .npz checkpoint .* neither"):
        pv.build_vit_ft("b16", SIZE, 4, weights_path=str(junk), config=TINY)
    with pytest.raises(DataError, match="missing.npz does not exist"):
        pv.build_vit_ft("b16", SIZE, 4, weights_path=str(tmp_path / "missing.npz"), config=TINY)


def test_resolve_local_path(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "mine.npz", flax_params(TINY, grid=2))
    assert pv.resolve_vit_weights(str(path), "b16") == path
    with pytest.raises(DataError, match="nothere.npz is neither"):
        pv.resolve_vit_weights(str(tmp_path / "nothere.npz"), "b16")


def test_resolve_url_downloads_into_the_keras_cache_once(http_dir: tuple[Path, str],
                                                         tmp_path: Path) -> None:
    folder, base = http_dir
    params = flax_params(TINY, grid=2, seed=3)
    write_npz(folder / "tiny vit.npz", params)
    url = f"{base}/tiny%20vit.npz"
    path = pv.resolve_vit_weights(url, "b16")
    assert path == Path(os.environ["KERAS_HOME"]) / "weights" / "tiny vit.npz"
    assert path.read_bytes() == (folder / "tiny vit.npz").read_bytes()
    (folder / "tiny vit.npz").unlink()  # now only the cache has it
    assert pv.resolve_vit_weights(url, "b16") == path
    model = pv.build_vit_ft("b16", SIZE, num_classes=4, weights_path=str(path), config=TINY)
    assert_loaded(model, params)


def test_release_names_use_vit_keras_url_and_cache(http_dir: tuple[Path, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder, base = http_dir
    write_npz(folder / "ViT-B_32_imagenet21k.npz", flax_params(TINY, grid=2))
    monkeypatch.setattr(vit_keras, "BASE_URL", base)
    path = pv.resolve_vit_weights("imagenet21k", "b32")
    assert path == Path(os.environ["KERAS_HOME"]) / "weights" / "ViT-B_32_imagenet21k.npz"
    assert path.is_file()


def test_release_name_offline_fails_fast_with_a_hint(dead_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vit_keras, "BASE_URL", dead_url)
    with pytest.raises(FetchError, match=r"cannot reach 127\.0\.0\.1.*copy ViT-B_16_imagenet21k\+"
                                         r"imagenet2012\.npz to .*weights"):
        pv.resolve_vit_weights("imagenet21k+imagenet2012", "b16")


def test_release_name_already_cached_needs_no_network(dead_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vit_keras, "BASE_URL", dead_url)
    cached = write_npz(Path(os.environ["KERAS_HOME"]) / "weights" / "ViT-B_32_imagenet21k.npz",
                       flax_params(TINY, grid=2))
    assert pv.resolve_vit_weights("imagenet21k", "b32") == cached


def test_url_without_file_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="vit_ft.weights"):
        pv.resolve_vit_weights("http://127.0.0.1:9/", "b16")


# --- variants, names, normalization -------------------------------------------------------------

def test_the_variant_table_agrees_with_vit_keras() -> None:
    """variants.VIT_VARIANTS (Keras-free: the section validates blocks with its depths) holds the
    depths of B and L that vit-keras' CONFIG_B and CONFIG_L build, and RELEASE_WEIGHTS the names of
    vit-keras' release files; the builder builds from both."""
    from vitbench.models.vit_ft.variants import RELEASE_WEIGHTS, VIT_VARIANTS

    assert RELEASE_WEIGHTS == tuple(vit_keras.WEIGHTS)
    assert {name: pv.depth(name) for name in VIT_VARIANTS} == {
        name: v.depth for name, v in VIT_VARIANTS.items()}
    widths = {name: (c["hidden_size"], c["num_heads"], c["mlp_dim"])
              for name, c in map(lambda n: (n, pv.vit_config(n)), ("ti16", "s32"))}
    assert widths == {"ti16": (192, 3, 768), "s32": (384, 6, 1536)}
    assert pv.vit_config("b16") == {**vit_keras.CONFIG_B}
    assert pv.vit_config("l32") == {**vit_keras.CONFIG_L}


@pytest.mark.parametrize(("variant", "weights", "url_end"), [
    ("ti16", "imagenet21k+imagenet2012", "/vit_models/augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-"
     "wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz"),
    ("s16", "imagenet21k", "/vit_models/augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-"
     "sd_0.0.npz"),
    ("s32", "imagenet21k+imagenet2012", "/vit_models/augreg/S_32-i21k-300ep-lr_0.001-aug_light1-"
     "wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz"),
    ("b32", "imagenet21k", "/vit-keras/releases/download/dl/ViT-B_32_imagenet21k.npz"),
    ("l16", "imagenet21k+imagenet2012", "/dl/ViT-L_16_imagenet21k+imagenet2012.npz"),
])
def test_release_files_are_the_official_ones(variant: str, weights: str, url_end: str) -> None:
    fname, url = pv.release_file(variant, weights)
    assert url.endswith(url_end) and url.endswith("/" + fname) and url.startswith("https://")


def test_display_names_follow_the_weights() -> None:
    assert pv.variant_name("ti16") == "ViT-Ti/16" and pv.variant_name("s32", 12) == "ViT-S/32"
    assert pv.variant_name("l16", 12) == "ViT-L/16 (12 blocks)"
    assert pv.base_name({"variant": "ti16", "lineage": "DeiT", "blocks": 4}) == "DeiT-Ti/16 (4 blocks)"
    assert pv.lineage("/w/deit_tiny_patch16_224.npz") == "DeiT"
    assert pv.lineage("https://h/x/DeiT-T.npz?x=1") == "DeiT"
    assert pv.lineage("imagenet21k") == pv.lineage("/w/ViT-B_16.npz") == "ViT"


@pytest.mark.parametrize(("normalize", "weights", "expected"), [
    ("auto", "imagenet21k+imagenet2012", "tf"), ("auto", "/w/Ti_16-i21k.npz", "tf"),
    ("auto", "/w/deit_tiny_patch16_224.npz", "torch"), ("auto", "http://h/DEIT.npz", "torch"),
    ("tf", "/w/deit_tiny.npz", "tf"), ("torch", "imagenet21k", "torch"),
])
def test_normalization_follows_the_weights(normalize: str, weights: str, expected: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    from vitbench.models.registry import params_with

    cfg = params_with({"vit_ft": {"normalize": normalize, "weights": weights}}).vit_ft
    with caplog.at_level("INFO", logger="vitbench.models.vit_ft.builder"):
        assert pv.normalization(cfg) == expected
    assert (f"auto -> {expected}" in caplog.text) == (normalize == "auto")
    with pytest.raises(ConfigError, match="vit_ft.normalize"):
        params_with({"vit_ft": {"normalize": "caffe"}})


def test_torch_normalization_is_imagenet_mean_and_std() -> None:
    from vitbench.data.pipeline import preprocess_fn

    x = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    got = np.asarray(preprocess_fn("torch")(x))[0, 0, 0]
    np.testing.assert_allclose(got, [(0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224,
                                     (1 - 0.406) / 0.225], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(preprocess_fn("tf")(x))[0, 0, 0], [-1, 0, 1])


@pytest.mark.slow
def test_a_file_of_another_width_or_depth_names_the_mismatch(tmp_path: Path) -> None:
    """A Ti-shaped file (192 wide, 3 heads, MLP 768) on s16, and a 2-block file on 4 blocks."""
    ti = {"hidden_size": 192, "num_heads": 3, "mlp_dim": 768, "num_layers": 2}
    path = write_npz(tmp_path / "ti.npz", flax_params(ti, grid=2))
    with pytest.raises(pv.WeightsFileError, match=r"ti\.npz does not fit vit_ft\.variant s16 "
                       r"\(ViT-S/16\): it has width 192 \(the model has 384\), heads 3 "
                       r"\(the model has 6\), mlp 768 \(the model has 1536\).*fits vit_ft"
                       r"\.variant ti16"):
        pv.build_vit_ft("s16", SIZE, 4, weights_path=str(path), blocks=2)
    with pytest.raises(pv.WeightsFileError, match=r"2 encoder blocks \(the model has 4\)"):
        pv.build_vit_ft("ti16", SIZE, 4, weights_path=str(path), blocks=4)
    with pytest.raises(pv.WeightsFileError, match=r"patch 16 \(the model has 32\)"):
        pv.build_vit_ft("s32", SIZE * 2, 4, weights_path=str(path), blocks=2,
                        config={"hidden_size": 192, "num_heads": 3, "mlp_dim": 768})
    model = pv.build_vit_ft("ti16", SIZE, 4, weights_path=str(path), blocks=2)
    assert model.get_layer("head").kernel.shape == (192, 4)


# --- a named weights file is checked in full, and never quietly becomes random weights -------------

SIX = {**TINY, "num_layers": 6}
ATT = "Transformer/encoderblock_{}/MultiHeadDotProductAttention_1"


def load_auto(path: Path, config: dict = TINY):  # type: ignore[no-untyped-def]
    """`pretrained: auto` with `path` named as the weights: the model, or the error it raises."""
    from vitbench.models import resolve_pretrained

    return resolve_pretrained("auto", "ViT-b16 weights", lambda: pv.build_vit_ft(
        "b16", SIZE, 4, representation_size=pv.representation_size(path),
        weights_path=str(path), config=config))


def changed(params: dict[str, np.ndarray], **arrays: np.ndarray | None) -> dict[str, np.ndarray]:
    """`params` with some arrays replaced (key with "." for "/"; None removes it)."""
    out = dict(params)
    for key, array in arrays.items():
        key = key.replace(".", "/")
        if array is None:
            del out[key]
        else:
            out[key] = array
    return out


def test_a_truncated_npz_is_an_error_naming_the_file(tmp_path: Path) -> None:
    whole = write_npz(tmp_path / "whole.npz", flax_params(TINY, grid=2)).read_bytes()
    for cut in (len(whole) // 2, len(whole) - 30):      # the middle of a tensor, the zip directory
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(whole[:cut])
        with pytest.raises(pv.WeightsFileError, match=f"{path} is not a readable .npz checkpoint "
                           r"\(the vit_jax layout\): it is an .npz cut short \(truncated\)"):
            load_auto(path)


def test_a_damaged_tensor_is_found_by_reading_every_tensor(tmp_path: Path) -> None:
    """A flipped byte inside the last block's data: the zip's CRC fails when that tensor is read."""
    path = tmp_path / "w.npz"
    np.savez_compressed(path, **flax_params(TINY, grid=2))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(pv.WeightsFileError, match=f"{path} is not a readable .npz checkpoint "
                       r"\(damaged\?\): BadZipFile: Bad CRC-32"):
        load_auto(path)


def test_random_arrays_under_other_names_are_an_error_naming_missing_tensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "random.npz",
                     {f"layer_{i}/w": rng.normal(size=(16, 16)).astype("float32") for i in range(4)})
    with pytest.raises(pv.WeightsFileError, match=rf"{path} does not fit vit_ft\.variant b16.*"
                       r"tensor\(s\) missing: cls, embedding/kernel.*4 unexpected tensor\(s\): "
                       r"layer_0/w"):
        load_auto(path)


@pytest.mark.slow
def test_a_late_block_of_another_shape_is_an_error_naming_the_tensor(tmp_path: Path) -> None:
    """Block 5's MLP kernel is 48 wide (16 x 32 expected): only block 0 was checked before."""
    params = flax_params(SIX, grid=2)
    bad = changed(params, **{"Transformer.encoderblock_5.MlpBlock_3.Dense_0.kernel":
                             np.zeros((16, 48), "float32")})
    path = write_npz(tmp_path / "block5.npz", bad)
    with pytest.raises(pv.WeightsFileError, match=r"block5\.npz does not fit.*tensor Transformer/"
                       r"encoderblock_5/MlpBlock_3/Dense_0/kernel has shape \(16, 48\), expected "
                       r"\(16, 32\)"):
        load_auto(path, SIX)


@pytest.mark.slow
def test_a_permuted_attention_kernel_of_the_same_size_is_an_error(tmp_path: Path) -> None:
    """vit-keras reshapes attention kernels to the layer's shape, so a (heads, head width, width)
    query kernel (same 256 numbers as (16, 2, 8)) used to load silently, scrambled."""
    params = flax_params(SIX, grid=2)
    query = params[f"{ATT.format(3)}/query/kernel"]
    path = write_npz(tmp_path / "permuted.npz", changed(params, **{
        f"{ATT.format(3)}/query/kernel".replace("/", "."): query.transpose(1, 2, 0)}))
    with pytest.raises(pv.WeightsFileError, match=r"tensor Transformer/encoderblock_3/MultiHead"
                       r"DotProductAttention_1/query/kernel has shape \(2, 8, 16\), expected "
                       r"\(16, 2, 8\)"):
        load_auto(path, SIX)


@pytest.mark.parametrize(("case", "message"), [
    ("extra", r"1 unexpected tensor\(s\): Transformer/encoderblock_1/extra/kernel"),
    ("gap", r"16 tensor\(s\) missing: Transformer/encoderblock_1/.*; 16 unexpected tensor\(s\): "
            r"Transformer/encoderblock_2/"),
    ("posembed", r"Transformer/posembed_input/pos_embedding has shape \(1, 6, 16\), expected "
                 r"\(1, 1 \+ n\*n, 16\)"),
    ("nan", r"tensor Transformer/encoder_norm/scale holds NaN or infinite values"),
    ("ints", r"tensor cls holds int64 values"),
    ("head", r"tensor head/bias has shape \(3,\)"),
])
def test_every_other_misfit_is_an_error_naming_the_tensor(tmp_path: Path, case: str,
                                                         message: str) -> None:
    params = flax_params(TINY, grid=2)
    block1 = {k: v for k, v in params.items() if k.startswith("Transformer/encoderblock_1/")}
    bad = {
        "extra": {**params, "Transformer/encoderblock_1/extra/kernel": np.zeros((2, 2), "float32")},
        "gap": {**{k: v for k, v in params.items() if k not in block1},
                **{k.replace("_1/", "_2/", 1): v for k, v in block1.items()}},
        "posembed": changed(params, **{"Transformer.posembed_input.pos_embedding":
                                       np.zeros((1, 6, 16), "float32")}),
        "nan": changed(params, **{"Transformer.encoder_norm.scale": np.full(16, np.nan, "float32")}),
        "ints": changed(params, cls=np.zeros((1, 1, 16), "int64")),
        "head": changed(params, **{"head.bias": np.zeros(3, "float32")}),
    }[case]
    path = write_npz(tmp_path / f"{case}.npz", bad)
    with pytest.raises(pv.WeightsFileError, match=message):
        load_auto(path)


def test_a_keras_h5_named_as_vit_weights_is_an_error(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "mobilenet_v2_no_top.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("Conv1/Conv1/kernel:0", data=np.zeros((3, 3, 3, 32), "float32"))
    with pytest.raises(pv.WeightsFileError, match=rf"{path} is not a readable .npz checkpoint .*it is "
                       r"an HDF5 file \(Keras .h5 weights belong in cnn.weights\)"):
        load_auto(path)


def test_auto_goes_random_only_when_the_download_cannot_happen(
        dead_url: str, monkeypatch: pytest.MonkeyPatch, server,  # noqa: ANN001
        caplog: pytest.LogCaptureFixture) -> None:
    """The release file behind a dead server: random weights, and the log says why. A named URL
    that the server answers with 404 is wrong, not unreachable: an error."""
    import logging

    from vitbench.models import registry, resolve_pretrained

    monkeypatch.setattr(vit_keras, "BASE_URL", dead_url)
    family = registry.family("vit_ft")
    for weights, url in (("imagenet21k", dead_url), (f"{server.url}/gone.npz", None)):
        cfg = SimpleNamespace(variant="b32", weights=weights, image_size=SIZE)

        def load():  # type: ignore[no-untyped-def]
            return family.load_pretrained(cfg, {"variant": "b32", "image_size": SIZE,
                                                "num_classes": 4, "representation_size": None})

        if url:
            with caplog.at_level(logging.WARNING, logger="vitbench.models"):
                assert resolve_pretrained("auto", "ViT-b32 imagenet21k weights", load) == (None, False)
            assert "ViT-b32 imagenet21k weights could not be downloaded (cannot reach 127.0.0.1" \
                in caplog.text and "RANDOM weights" in caplog.text
        else:
            with pytest.raises(FetchError, match=f"HTTP 404 Not Found for {server.url}/gone.npz"):
                resolve_pretrained("auto", "ViT-b32 weights", load)
