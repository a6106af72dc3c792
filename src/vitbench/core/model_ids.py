"""The contract's model ids, the CNN architectures and the pretrained ViT variants, as plain data
(no Keras, no TensorFlow).

One table shared by `vitbench.core.config` (valid `cnn.arch`, the `--model` choices), the model registry
(`vitbench.models.registry` adds each family's builder and kind) and dvc.yaml (its `evaluate`
foreach list and artifacts, checked against MODEL_IDS by tests/test_dvc_deps.py). Whether a model
is a CNN or a ViT is the registry's to say, through its family: consumers of the evaluate outputs
read `kind` from metrics/<id>.json, never from the id.

`VIT_VARIANTS` is the one table of what each `vit_ft.variant` is: config validates the variant,
image size and blocks with it, and `vitbench.models.pretrained_vit` builds the model from it (the
widths of B and L are vit-keras' CONFIG_B and CONFIG_L, read when a model is built).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """One of the contract's model ids: a family trained in one phase."""

    id: str
    family: str               # a key of vitbench.models.registry.FAMILIES
    phase: str                # transfer, finetune or scratch
    meant_pretrained: bool    # starts from pretrained weights when they are available


MODELS: dict[str, ModelSpec] = {m.id: m for m in (
    ModelSpec("cnn_transfer", "cnn", "transfer", True),
    ModelSpec("cnn_finetuned", "cnn", "finetune", True),
    ModelSpec("vit_scratch", "vit_scratch", "scratch", False),
    ModelSpec("vit_transfer", "vit_ft", "transfer", True),
    ModelSpec("vit_finetuned", "vit_ft", "finetune", True),
)}
MODEL_IDS = tuple(MODELS)
CNN_ARCHS = ("mobilenetv2", "vgg16", "resnet50", "efficientnetb0")   # vitbench.models.cnn.ARCHS


@dataclass(frozen=True)
class VitVariant:
    """One standard ViT: size letter, patch size, encoder blocks, and the stem of its AugReg file
    names with its (width, heads, MLP width, dropout) where vit-keras has no CONFIG_<size> (Ti, S);
    None for B and L: vit-keras' release files and build arguments."""

    size: str
    patch: int
    depth: int
    augreg: str | None = None
    arch: tuple[int, int, int, float] | None = None


# AugReg stems as published (vit_jax's augreg index; timm's augreg_in21k(_ft_in1k) files).
VIT_VARIANTS: dict[str, VitVariant] = {
    "ti16": VitVariant("Ti", 16, 12, "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
                       (192, 3, 768, 0.0)),
    "s16": VitVariant("S", 16, 12, "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
                      (384, 6, 1536, 0.0)),
    "s32": VitVariant("S", 32, 12, "S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
                      (384, 6, 1536, 0.0)),
    "b16": VitVariant("B", 16, 12),      # depths of B and L: vit-keras' CONFIG_B, CONFIG_L
    "b32": VitVariant("B", 32, 12),      # (tests/test_models_pretrained_vit.py checks them)
    "l16": VitVariant("L", 16, 24),
    "l32": VitVariant("L", 32, 24),
}

# `vit_ft.weights` naming timm weights on the Hugging Face hub (vitbench.models.timm_weights)
HUB_WEIGHTS = re.compile(r"^hf-hub:(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
HUB_WEIGHTS_FORM = ("hf-hub:<owner>/<model>[@revision], e.g. "
                    "hf-hub:timm/deit_tiny_patch16_224.fb_in1k")
