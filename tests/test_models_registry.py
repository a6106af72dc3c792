"""The model family registry: one table for every "which kind of model" question."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from vitbench.core import config
from vitbench.core.errors import ConfigError
from vitbench.models import pretrained_vit, registry
from vitbench.evaluate.saliency import saliency_maps

TINY = config.params_with({
    "cnn": {"arch": "vgg16", "image_size": 32},
    "vit": {"image_size": 16, "patch_size": 4, "projection_dim": 8, "num_heads": 2, "layers": 1,
            "mlp_head": [8]},
    "vit_ft": {"variant": "b16", "image_size": 32},
})


def test_model_ids_are_the_contracts():
    assert tuple(registry.MODELS) == config.MODEL_IDS
    for spec in registry.MODELS.values():
        assert spec.family in registry.FAMILIES and spec.phase in registry.PHASES
    assert [m.id for m in registry.models_of("cnn")] == ["cnn_transfer", "cnn_finetuned"]
    assert [m.id for m in registry.models_of("vit_ft")] == ["vit_transfer", "vit_finetuned"]
    assert {m.id: registry.kind(m.id) for m in registry.MODELS.values()} == {
        "cnn_transfer": "CNN", "cnn_finetuned": "CNN", "vit_scratch": "ViT",
        "vit_transfer": "ViT", "vit_finetuned": "ViT"}
    assert [m.id for m in registry.MODELS.values() if m.meant_pretrained] == [
        "cnn_transfer", "cnn_finetuned", "vit_transfer", "vit_finetuned"]
    assert registry.identity("vit_transfer") == {"family": "vit_ft", "kind": "ViT",
                                                 "meant_pretrained": True}
    with pytest.raises(ConfigError, match="model id"):
        registry.model_spec("rnn_transfer")


def test_every_family_reads_its_own_params_section():
    sections = {f.name for f in dataclasses.fields(config.Params)}
    specs = {}
    for family in registry.FAMILIES.values():
        assert family.section in sections
        specs[family.name] = family.input_spec(getattr(TINY, family.section))
    assert specs == {"cnn": (32, "vgg16"), "vit_scratch": (16, "vit"), "vit_ft": (32, "tf")}
    assert registry.family("vit_ft").build_kwargs(TINY.vit_ft, 3) == {
        "variant": "b16", "image_size": 32, "num_classes": 3, "representation_size": None}


@pytest.mark.parametrize("name", ["cnn", "vit_scratch"])
def test_builds_from_its_section_and_freezes_per_phase(name):
    family = registry.family(name)
    cfg = getattr(TINY, family.section)
    model = family.rebuild(family.build_kwargs(cfg, 3))
    assert model.output_shape == (None, 3)
    for spec in registry.models_of(name):
        family.prepare_phase(model, spec.phase, pretrained=True)
        trainable = {layer.name for layer in model.layers if layer.trainable_weights}
        assert trainable == ({"head"} if spec.phase == "transfer" else
                             {layer.name for layer in model.layers if layer.weights})
    keras.backend.clear_session()


def test_attention_only_for_vits():
    assert registry.family("cnn").attention is None
    assert registry.family("vit_scratch").attention is not None
    fam = registry.family("vit_ft")   # builders are referenced lazily (registry.BuilderModule)
    assert fam.attention.__name__ == "attention_weights" and fam.code == pretrained_vit.__name__


TINY_BUILDS = {
    "cnn": ({"arch": "mobilenetv2", "image_size": 32, "num_classes": 3, "dropout": 0.0}, (1, 1)),
    "vit_scratch": (registry.family("vit_scratch").build_kwargs(TINY.vit, 3), (4, 4)),
    "vit_ft": ({"variant": "b16", "image_size": 32, "num_classes": 3, "representation_size": None,
                "config": {"hidden_size": 8, "num_layers": 2, "num_heads": 2, "mlp_dim": 8}}, (2, 2)),
}


@pytest.mark.parametrize("name", list(TINY_BUILDS))
def test_saliency_maps_per_family(name):
    """Grad-CAM on the CNN's last feature map, rollout over the ViTs' patch grids; 0..1 maps."""
    family = registry.family(name)
    build, grid = TINY_BUILDS[name]
    model = family.rebuild(build)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype("float32")[:, :build["image_size"],
                                                                                 :build["image_size"]]
    maps = saliency_maps(model, family, x)
    assert maps.shape == (3, *grid) and maps.min() >= 0 and maps.max() <= 1
    assert family.saliency.figure == ("gradcam.png" if name == "cnn" else "attention.png")
    keras.backend.clear_session()


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="rnn.*cnn, vit_scratch, vit_ft"):
        registry.family("rnn")


def test_vit_ft_weights_existence_is_checked_where_used(tmp_path):
    check = registry.family("vit_ft").check_weights
    for ok in ("imagenet21k", "https://example.org/w.npz"):
        check(dataclasses.replace(TINY.vit_ft, weights=ok))
    (tmp_path / "w.npz").write_bytes(b"")
    check(dataclasses.replace(TINY.vit_ft, weights=str(tmp_path / "w.npz")))
    with pytest.raises(ConfigError) as info:
        check(dataclasses.replace(TINY.vit_ft, weights="/no/such.npz"))
    assert info.value.key == "vit_ft.weights" and "existing .npz" in info.value.allowed


def test_vit_ft_blocks_reach_the_build_and_the_name():
    cfg = dataclasses.replace(TINY.vit_ft, blocks=3)
    build = registry.family("vit_ft").build_kwargs(cfg, 3)
    assert build["blocks"] == 3
    assert registry.display_name("vit_transfer", "vit_ft", build) == "ViT-B/16 (3 blocks) (transfer)"
    with pytest.raises(ConfigError, match=r"vit_ft\.blocks"):
        config.params_with({"vit_ft": {"blocks": 0}})
