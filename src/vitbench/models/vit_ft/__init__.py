"""The pretrained ViT family (params section `vit_ft`, stage finetune_vit, models vit_transfer and
vit_finetuned): a vit-keras ViT of `variants.VIT_VARIANTS` under a new head (`builder`), its
weights from vit-keras' releases, AugReg, a vit_jax .npz or timm safetensors (`timm_weights`)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field
from pydantic import model_validator as check

from vitbench.core.config import PhaseRecipe
from vitbench.core.config.errors import reject
from vitbench.core.config.types import Bool, Epochs, Int, Pretrained, Str, section
from vitbench.models.family import CLASS_TOKEN_ROLLOUT, Family, freeze_all_but_head, later
from vitbench.models.registry import register
from vitbench.models.vit_ft.timm_weights import HUB_WEIGHTS, HUB_WEIGHTS_FORM
from vitbench.models.vit_ft.variants import RELEASE_WEIGHTS, VIT_VARIANTS

check_weights_setting = later("vitbench.models.vit_ft.builder:check_weights_setting")


@section
class VitFt:
    variant: Annotated[Literal[tuple(VIT_VARIANTS)],
                       Field(description=f"one of {', '.join(VIT_VARIANTS)}")]
    image_size: Annotated[Int, Field(le=1024)]
    pretrained: Pretrained
    weights: Str
    blocks: Union[Annotated[Int, Field(ge=1)], None]  # keep the first N of the variant's blocks; None: all
    normalize: Annotated[Literal["auto", "tf", "torch"], Field(description="auto | tf | torch")]
    feature_cache: Bool
    transfer: PhaseRecipe
    finetune: PhaseRecipe
    epochs: Epochs          # each phase's epochs; null = train.epochs

    @property
    def patch_size(self) -> int:
        return VIT_VARIANTS[self.variant].patch

    @check(mode="after")
    def _check(self) -> VitFt:
        patch, depth = self.patch_size, VIT_VARIANTS[self.variant].depth
        if self.image_size < patch:
            reject("vit_ft.image_size", self.image_size, f"an integer >= {patch} and <= 1024")
        if self.blocks is not None and self.blocks > depth:
            reject("vit_ft.blocks", self.blocks, f"an integer >= 1 and <= {depth}")
        if self.image_size % patch:
            reject("vit_ft.image_size", self.image_size, f"a multiple of the {self.variant} patch "
                   f"size ({patch}), e.g. {patch * 2}, {patch * 7}")
        hub = self.weights.startswith("hf-hub:")  # a hub name must be well-formed
        if not self.weights.strip() or (hub and not HUB_WEIGHTS.match(self.weights)):
            reject("vit_ft.weights", self.weights,  # a local file's existence: checked where used
                   f"{' or '.join(RELEASE_WEIGHTS)}, {HUB_WEIGHTS_FORM}, an http(s) URL, or a "
                   "timm .safetensors or .npz file path")
        return self


FAMILY = register(Family(
    name="vit_ft", kind="ViT", stage="finetune_vit", section=VitFt,
    phases={"vit_transfer": "transfer", "vit_finetuned": "finetune"},
    builder=later("vitbench.models.vit_ft.builder:build_vit_ft"),
    build_kwargs=later("vitbench.models.vit_ft.builder:build_kwargs"),
    preprocess=later("vitbench.models.vit_ft.builder:normalization"),
    set_trainable=freeze_all_but_head, saliency=CLASS_TOKEN_ROLLOUT,
    base_name=later("vitbench.models.vit_ft.builder:base_name"),
    weights_kwarg="weights_path",
    load_pretrained=later("vitbench.models.vit_ft.builder:load_pretrained"),
    weights_label=lambda cfg: f"ViT-{cfg.variant} {cfg.weights} weights",
    check_weights=lambda cfg: check_weights_setting(cfg.weights),
    attention=later("vitbench.models.vit_ft.builder:attention_weights"),
))
