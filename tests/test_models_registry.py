"""The model families: each declares itself in its package; the registry only collects them."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from vitbench.core import config
from vitbench.core.errors import ConfigError
from vitbench.models import registry
from vitbench.models.vit_ft import builder as pretrained_vit
from vitbench.evaluate.saliency import saliency_maps

TINY = registry.params_with({
    "cnn": {"arch": "vgg16", "image_size": 32},
    "vit": {"image_size": 16, "patch_size": 4, "projection_dim": 8, "num_heads": 2, "layers": 1,
            "mlp_head": [8]},
    "vit_ft": {"variant": "b16", "image_size": 32},
})


def test_model_ids_are_the_contracts():
    models = registry.models()
    assert tuple(models) == ("cnn_transfer", "cnn_finetuned", "vit_scratch", "vit_transfer",
                             "vit_finetuned")
    for spec in models.values():
        assert spec.family in registry.families() and spec.phase in config.PHASES
    assert [m.id for m in registry.family("cnn").models] == ["cnn_transfer", "cnn_finetuned"]
    assert [m.id for m in registry.family("vit_ft").models] == ["vit_transfer", "vit_finetuned"]
    assert {m.id: registry.kind(m.id) for m in models.values()} == {
        "cnn_transfer": "CNN", "cnn_finetuned": "CNN", "vit_scratch": "ViT",
        "vit_transfer": "ViT", "vit_finetuned": "ViT"}
    assert [m.id for m in models.values() if m.meant_pretrained] == [
        "cnn_transfer", "cnn_finetuned", "vit_transfer", "vit_finetuned"]
    assert registry.identity("vit_transfer") == {"family": "vit_ft", "phase": "transfer",
                                                 "kind": "ViT", "meant_pretrained": True}
    with pytest.raises(ConfigError, match="model id"):
        registry.model_spec("rnn_transfer")


def test_every_family_reads_its_own_params_section():
    sections = registry.section_names()
    specs = {}
    for family in registry.families().values():
        assert family.name in sections and family.params == ((family.name, family.section),)
        specs[family.name] = family.input_spec(getattr(TINY, family.name))
    assert specs == {"cnn": (32, "caffe"), "vit": (16, "tf"), "vit_ft": (32, "torch")}
    assert registry.family("vit_ft").build_kwargs(TINY.vit_ft, 3) == {
        "variant": "b16", "image_size": 32, "num_classes": 3, "representation_size": None}


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_builds_from_its_section_and_freezes_per_phase(name):
    family = registry.family(name)
    cfg = getattr(TINY, name)
    model = family.rebuild(family.build_kwargs(cfg, 3))
    assert model.output_shape == (None, 3)
    for spec in family.models:
        family.prepare_phase(model, spec.phase, pretrained=True)
        trainable = {layer.name for layer in model.layers if layer.trainable_weights}
        assert trainable == ({"head"} if spec.phase == "transfer" else
                             {layer.name for layer in model.layers if layer.weights})
    keras.backend.clear_session()


def test_attention_only_for_vits():
    assert registry.family("cnn").attention is None
    assert registry.family("vit").attention is not None
    fam = registry.family("vit_ft")
    attention = (fam.attention.__module__, fam.attention.__name__)
    assert attention == (pretrained_vit.__name__, "attention_weights")
    assert fam.module == "vitbench.models.vit_ft"


TINY_BUILDS = {
    "cnn": ({"arch": "mobilenetv2", "image_size": 32, "num_classes": 3, "dropout": 0.0}, (1, 1)),
    "vit": (registry.family("vit").build_kwargs(TINY.vit, 3), (4, 4)),
    "vit_ft": ({"variant": "b16", "image_size": 32, "num_classes": 3, "representation_size": None,
                "config": {"hidden_size": 8, "num_layers": 2, "num_heads": 2, "mlp_dim": 8}}, (2, 2)),
}


@pytest.mark.slow
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
    with pytest.raises(ValueError, match="rnn.*cnn, vit, vit_ft"):
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
        registry.params_with({"vit_ft": {"blocks": 0}})


def test_a_new_cnn_architecture_is_one_entry(monkeypatch):
    """One `CnnArch` in archs.ARCHS: cnn.arch accepts it, the family builds it with its
    preprocessing and names it; nothing else changes."""
    from vitbench.models.cnn import archs

    def tiny_base(include_top: bool, weights, input_shape, name: str) -> keras.Model:
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
        return keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x), name=name)

    with pytest.raises(ConfigError, match="cnn.arch.*tinynet"):
        registry.params_with({"cnn": {"arch": "tinynet"}})
    monkeypatch.setitem(archs.ARCHS, "tinynet", archs.CnnArch(
        tiny_base, "raw", "TinyNet", "tinynet_notop.h5", "https://example.invalid/"))
    params = registry.params_with({"cnn": {"arch": "tinynet", "image_size": 32}})
    family = registry.family("cnn")
    assert family.input_spec(params.cnn) == (32, "raw")
    build = family.build_kwargs(params.cnn, 3)
    model = family.rebuild(build)
    assert model.output_shape == (None, 3) and model.get_layer("base").get_layer("conv")
    assert registry.display_name("cnn_finetuned", "cnn", build) == "TinyNet (fine-tuned)"
    with pytest.raises(ConfigError, match="cnn.arch.*alexnet.*tinynet"):
        registry.params_with({"cnn": {"arch": "alexnet"}})
    keras.backend.clear_session()


@pytest.mark.slow
def test_declarations_start_no_tensorflow() -> None:
    """In a fresh process: every family's declaration, the model ids, a whole params.yaml check
    and the modules behind `vitbench sweep`, `seeds`, `cv`, `summarize` and `preset` import no
    Keras or TensorFlow (the builders are named with `later`); building a model then does."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from vitbench.models import registry\n"
            "import vitbench.cli, vitbench.experiments.sweep, vitbench.experiments.seeds\n"
            "import vitbench.experiments.cv, vitbench.experiments.sweep_summary\n"
            "import vitbench.experiments.presets, vitbench.evaluate.predict\n"
            "assert len(registry.model_ids()) == 5\n"
            "params = registry.load_params('params.yaml')\n"
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
            "family = registry.family('vit')\n"
            "family.rebuild(family.build_kwargs(params.vit, 3))\n"
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=registry.PACKAGE_DIR.parents[2],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "['keras', 'tensorflow']"]


def test_later_imports_its_module_on_the_first_call() -> None:
    from vitbench.models.family import later

    digest = later("hashlib:sha256")
    assert (digest.__module__, digest.__name__) == ("hashlib", "sha256")
    assert digest(b"").hexdigest().startswith("e3b0c442")
    with pytest.raises(ValueError, match="expected 'package.module:function'"):
        later("hashlib.sha256")
