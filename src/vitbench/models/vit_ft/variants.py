"""The standard ViT variants `vit_ft.variant` names: the one table of what each is (patch size,
depth, the stem of its AugReg files, the widths of Ti and S; B and L take vit-keras' CONFIG_B and
CONFIG_L when a model is built)."""

from __future__ import annotations

from dataclasses import dataclass

from vitbench.core.errors import ConfigError


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


# vit-keras' release weights by name (vit_keras.vit.WEIGHTS' keys, checked by
# tests/test_models_pretrained_vit.py): `vit_ft.weights` names one to fetch the variant's file
RELEASE_WEIGHTS = ("imagenet21k", "imagenet21k+imagenet2012")

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


def variant_spec(variant: str) -> VitVariant:
    """The table entry of a variant, or a ConfigError naming the allowed ones."""
    if variant not in VIT_VARIANTS:
        raise ConfigError("vit_ft.variant", variant, f"one of {', '.join(VIT_VARIANTS)}")
    return VIT_VARIANTS[variant]
