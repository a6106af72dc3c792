"""The from-scratch ViT: patches, SPT, LSA, serialisation, attention, and the patches figure."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from vitbench.models.vit import layers as vit
from vitbench.models.vit.patches import patch_grid, token_grid

SMALL = dict(image_size=16, patch_size=4, projection_dim=8, num_heads=2, layers=2, mlp_head=[8],
             dropout=0.1, num_classes=3)


def images(n: int = 2, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


# --- patches -----------------------------------------------------------------------------------------

def test_extract_then_reassemble_is_exact() -> None:
    x = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    patches = vit.extract_patches(x, 4)
    assert patches.shape == (3, 9, 48)
    np.testing.assert_array_equal(vit.reassemble_patches(patches, 12, 4), x)
    np.testing.assert_array_equal(vit.reassemble_patches(patches[1], 12, 4), x[1])


def test_patches_are_row_major_blocks() -> None:
    x = np.arange(4 * 4 * 3).reshape(4, 4, 3)
    patches = vit.extract_patches(x, 2)
    np.testing.assert_array_equal(patches[1], x[0:2, 2:4].reshape(-1))  # top right
    np.testing.assert_array_equal(patches[2], x[2:4, 0:2].reshape(-1))  # bottom left


def test_bad_patch_sizes_are_errors() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size 5"):
        vit.extract_patches(np.zeros((12, 12, 3)), 5)
    with pytest.raises(ValueError, match="do not tile"):
        vit.reassemble_patches(np.zeros((8, 48)), 12, 4)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        vit.build_vit(**{**SMALL, "patch_size": 5}, spt=False, lsa=False)


def test_patches_layer_matches_numpy() -> None:
    x = images()
    np.testing.assert_array_equal(vit.Patches(4)(x), vit.extract_patches(x, 4))


def test_shift_image_moves_pixels_and_zero_fills() -> None:
    x = np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)
    down_right = keras.ops.convert_to_numpy(vit.shift_image(x, 1, 1))[0, ..., 0]
    np.testing.assert_array_equal(down_right[1:, 1:], x[0, :3, :3, 0])
    assert not down_right[0].any() and not down_right[:, 0].any()
    up_left = keras.ops.convert_to_numpy(vit.shift_image(x, -2, -2))[0, ..., 0]
    np.testing.assert_array_equal(up_left[:2, :2], x[0, 2:, 2:, 0])
    assert not up_left[2:].any() and not up_left[:, 2:].any()


def test_shifted_patch_tokenization_sees_five_images() -> None:
    spt = vit.ShiftedPatchTokenization(patch_size=4, projection_dim=8)
    tokens = spt(images())
    assert tokens.shape == (2, 16, 8)
    assert spt.projection.kernel.shape == (5 * 4 * 4 * 3, 8)  # image + 4 shifts, stacked


# --- layers round-trip through their config --------------------------------------------------------

@pytest.mark.parametrize("layer", [
    vit.Patches(4),
    vit.ShiftedPatchTokenization(4, 8),
    vit.PatchEncoder(16, 8, project=False),
    vit.MultiHeadAttentionLSA(num_heads=2, key_dim=4, dropout=0.1),
    vit.Mlp([8, 4], 0.2),
    vit.TransformerBlock(8, 2, 0.1, lsa=True),
    vit.TransformerBlock(8, 2, 0.1, lsa=False, drop_path=0.2),
    vit.ConvTokenizer(8, 2),
    vit.DropPath(0.3, seed=1),
    vit.SeqPool(),
], ids=lambda layer: type(layer).__name__)
def test_layer_config_round_trip(layer: keras.layers.Layer) -> None:
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == f"vitbench>{type(layer).__name__}"
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(("spt", "lsa"), [(False, False), (True, False), (False, True), (True, True)])
def test_build_vit_variants(spt: bool, lsa: bool) -> None:
    model = vit.build_vit(**SMALL, spt=spt, lsa=lsa)
    probs = model.predict(images(), verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    head = model.get_layer("head")
    assert head.dtype_policy.compute_dtype == "float32" and head.activation.__name__ == "softmax"
    names = {layer.name for layer in model.layers}
    assert ("tokenizer" in names) == spt and ("patches" in names) != spt
    taus = [w for w in model.trainable_weights if w.path.endswith("/tau")]
    assert len(taus) == (2 if lsa else 0)
    if lsa:
        assert float(taus[0].numpy()) == pytest.approx(np.sqrt(8 // 2))


@pytest.mark.parametrize("lsa", [False, True])
def test_attention_weights(lsa: bool) -> None:
    model = vit.build_vit(**SMALL, spt=True, lsa=lsa)
    weights = vit.attention_weights(model, images(3))
    assert [w.shape for w in weights] == [(3, 2, 16, 16)] * 2
    np.testing.assert_allclose(weights[0].sum(axis=-1), 1.0, rtol=1e-5)
    diagonal = np.diagonal(weights[1], axis1=-2, axis2=-1)
    if lsa:
        np.testing.assert_array_equal(diagonal, 0.0)  # LSA: no token attends to itself
    else:
        assert diagonal.min() > 0


@pytest.mark.slow
def test_lsa_temperature_is_learned() -> None:
    model = vit.build_vit(**{**SMALL, "layers": 1}, spt=False, lsa=True)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    tau = next(w for w in model.trainable_weights if w.path.endswith("/tau"))
    before = float(tau.numpy())
    model.train_on_batch(images(4), np.array([0, 1, 2, 0]))
    assert float(tau.numpy()) != before


@pytest.mark.slow
def test_whole_model_json_round_trip_needs_no_unsafe_code() -> None:
    model = vit.build_vit(**SMALL, spt=True, lsa=True)
    clone = keras.models.model_from_json(model.to_json())  # safe_mode stays on
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(images(), verbose=0),
                               model.predict(images(), verbose=0), rtol=1e-5, atol=1e-6)


def test_mixed_precision_keeps_a_float32_head() -> None:
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = vit.build_vit(**SMALL, spt=True, lsa=True)
        out = model(images(), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("transformer_block_0").compute_dtype == "float16"
    assert out.dtype == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out).sum(axis=1), 1.0, rtol=1e-3)


# --- the patches figure ------------------------------------------------------------------------------

def test_patch_grid_figure(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = patch_grid(image, 6, tmp_path / "plots" / "vit_patches.png")
    assert out == tmp_path / "plots" / "vit_patches.png"
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 400 and png.height > 200
    assert not list(out.parent.glob(".*tmp*"))


@pytest.mark.slow
def test_patch_grid_title_names_the_sizes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    titles: list[str] = []
    import vitbench.models.vit.patches as patches_module

    real_save = patches_module.save_figure

    def spy(fig, path):  # type: ignore[no-untyped-def]
        titles.append(fig._suptitle.get_text())
        titles.extend(t.get_text() for t in fig.texts)
        return real_save(fig, path)

    monkeypatch.setattr(patches_module, "save_figure", spy)
    patch_grid(np.zeros((72, 72, 3), dtype=np.float32), 6, tmp_path / "p.png")
    assert "72x72 image, 6x6 patches: 144 patches, 108 elements per patch" in titles
    assert "Patches (12x12)" in titles


def test_receptive_field_of_the_conv_tokenizer() -> None:
    # one stage: conv 3 + pool 3 = 5 px; each further stage adds 4 x the doubled stride
    assert [vit.ConvTokenizer.receptive_field(n) for n in (1, 2, 3)] == [5, 13, 29]
    # checked against the layer itself: a token changes only with pixels inside its field
    keras.utils.set_random_seed(0)
    layer = vit.ConvTokenizer(4, 2)
    x = np.zeros((1, 32, 32, 3), np.float32)
    base = np.asarray(layer(x))
    x[0, 15, 15] = 1.0   # token t sees pixels 4t-3 .. 4t+9 (TF "same" padding): for t = 1, 1..13 ...
    changed = np.any(np.asarray(layer(x)) != base, axis=-1)[0].reshape(8, 8)
    rows, cols = np.nonzero(changed)
    assert changed.any() and rows.min() >= 2 and cols.min() >= 2  # ... leaves token (1, 1) alone


@pytest.mark.slow
def test_token_grid_title_names_tokens_and_field(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    titles: list[str] = []
    import vitbench.models.vit.patches as patches_module

    real_save = patches_module.save_figure
    monkeypatch.setattr(patches_module, "save_figure",
                        lambda fig, path: (titles.append(fig._suptitle.get_text()),
                                           real_save(fig, path))[1])
    out = token_grid(np.zeros((60, 60, 3), dtype=np.uint8), 8, tmp_path / "p.png")
    assert out.is_file()   # 60 px is not a multiple of 8: padded to 64, 8x8 tokens
    assert titles == ["60x60 image, conv tokens with stride 8 (3 conv + pool stages): 64 tokens, "
                      "one per 8x8 cell, each seeing 29x29 px around it"]


def test_patch_size_is_the_conv_tokenizers_stride() -> None:
    """vit.patch_size sets the conv tokenizer's stages (log2): another patch_size, another model."""
    conv = {**SMALL, "spt": False, "lsa": False, "tokenizer": "conv"}
    by_size = {p: vit.build_vit(**{**conv, "patch_size": p}) for p in (2, 4, 8)}
    for p, model in by_size.items():
        assert model.get_layer("tokenizer").conv_layers == vit.conv_stages(p) == {2: 1, 4: 2, 8: 3}[p]
        assert model.get_layer("patch_encoder").num_patches == (16 // p) ** 2
    assert len({m.count_params() for m in by_size.values()}) == 3
    for bad in (1, 3, 6, 12):
        with pytest.raises(ValueError, match=f"patch_size {bad} is not a power of two"):
            vit.conv_stages(bad)
    from vitbench.models.registry import params_with
    from vitbench.core.errors import ConfigError
    with pytest.raises(ConfigError, match="vit.patch_size.*power of two"):
        params_with({"vit": {"tokenizer": "conv", "spt": False, "image_size": 48,
                                  "patch_size": 6}})
    from vitbench.core.recipe import tokens_of
    assert tokens_of({**conv, "patch_size": 8, "image_size": 48}) == "conv tokens, stride 8: 6x6 = 36"
    assert tokens_of({**SMALL, "spt": True}) == "4x4 patches (SPT): 4x4 = 16"


def test_patch_grid_rejects_non_tiling_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of patch_size 5"):
        patch_grid(np.zeros((24, 24, 3), dtype=np.uint8), 5, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


# --- the small-data options: conv tokenizer, sequence pooling, stochastic depth ---------------------

def test_conv_tokenizer_halves_the_grid_per_stage() -> None:
    tokens = vit.ConvTokenizer(8, 2)(images(size=16))
    assert tokens.shape == (2, 16, 8)                         # 16 -> 8 -> 4 per side
    assert vit.ConvTokenizer.grid(48, 2) == 12 and vit.ConvTokenizer.grid(15, 1) == 8
    assert float(keras.ops.min(tokens)) >= 0.0                # ReLU, then max pooling


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    x = np.ones((64, 5, 4), "float32")
    layer = vit.DropPath(0.5, seed=3)
    np.testing.assert_array_equal(layer(x, training=False), x)
    out = np.asarray(layer(x, training=True))
    per_sample = out.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}           # dropped, or kept and scaled 1/(1-p)
    assert all(len(set(row)) == 1 for row in per_sample)      # the whole sample at once
    assert 10 < int((per_sample[:, 0] == 0).sum()) < 54
    np.testing.assert_array_equal(vit.DropPath(0.0)(x, training=True), x)


def test_drop_path_rate_rises_linearly_over_the_blocks() -> None:
    model = vit.build_vit(**{**SMALL, "layers": 3}, spt=False, lsa=False, drop_path=0.2)
    rates = [model.get_layer(f"transformer_block_{i}").drop_path for i in range(3)]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


@pytest.mark.slow
def test_conv_tokenizer_seq_pool_and_drop_path_save_and_reload_to_identical_predictions(
        tmp_path: Path) -> None:
    """One model with every small-data option: stochastic in training, deterministic at
    inference, and models/<id> reloads it (weights + record, no safe_mode=False) exactly."""
    from vitbench.models.store import load_model, save_model

    build = {**SMALL, "spt": False, "lsa": True, "tokenizer": "conv",
             "seq_pool": True, "drop_path": 0.3}
    model = vit.build_vit(**build)
    x = images(4, seed=5)
    assert not np.allclose(model(x, training=True), model(x, training=True))  # drop path
    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    save_model(model, tmp_path / "m", {"id": "vit_scratch", "family": "vit", "build": build})
    again, record = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(x, verbose=0), expected)
    assert again.count_params() == model.count_params() == record["params_total"]
    assert "conv tokenizer" in record["display_name"] and "patches" not in {
        layer.name for layer in model.layers}
    side = vit.ConvTokenizer.grid(16, vit.conv_stages(build["patch_size"]))
    assert [w.shape for w in vit.attention_weights(model, x)][0] == (4, 2, side ** 2, side ** 2)
    clone = keras.models.model_from_json(model.to_json())     # the whole graph is serializable
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
