"""The from-scratch ViT family (params section `vit`, stage train_vit, model vit_scratch): the
Keras example's ViT with the small-data options; layers and builder in `layers`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic import model_validator as check

from vitbench.core.config import PhaseRecipe
from vitbench.core.config.errors import reject
from vitbench.core.config.types import Bool, Epochs, Float, Fraction, Int, section
from vitbench.models.family import MEAN_ROLLOUT, Family, freeze_all, later
from vitbench.models.registry import register


@section
class Vit:
    image_size: Annotated[Int, Field(ge=8, le=1024)]
    patch_size: Annotated[Int, Field(ge=1)]
    projection_dim: Annotated[Int, Field(ge=1)]
    num_heads: Annotated[Int, Field(ge=1)]
    layers: Annotated[Int, Field(ge=1)]
    mlp_head: tuple[Annotated[Int, Field(ge=1)], ...]
    dropout: Fraction
    lr: Annotated[Float, Field(gt=0.0, le=1.0)]
    weight_decay: Annotated[Float, Field(ge=0.0, le=1.0)]
    spt: Bool
    lsa: Bool
    warmup: Fraction
    label_smoothing: Fraction
    drop_path: Fraction
    tokenizer: Annotated[Literal["patch", "conv"], Field(description="one of patch, conv")]
    seq_pool: Bool
    epochs: Epochs          # this stage's epochs; null = train.epochs

    @property
    def recipe(self) -> PhaseRecipe:
        """lr, weight_decay, warmup and label_smoothing as one phase's recipe."""
        return PhaseRecipe(self.lr, self.weight_decay, self.warmup, self.label_smoothing)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @check(mode="after")
    def _check(self) -> Vit:
        size, patch, conv = self.image_size, self.patch_size, self.tokenizer == "conv"
        if patch > size:
            reject("vit.patch_size", patch, f"an integer >= 1 and <= {size}")
        if size % patch:
            divisors = ", ".join([str(d) for d in range(2, size) if size % d == 0][:6])
            reject("vit.patch_size", patch, f"a divisor of vit.image_size ({size}), e.g. {divisors}")
        if self.projection_dim % self.num_heads:
            reject("vit.num_heads", self.num_heads,
                   f"a divisor of vit.projection_dim ({self.projection_dim})")
        if not self.mlp_head:  # the head needs a width to hand to the classifier
            reject("vit.mlp_head", list(self.mlp_head), "a list of one or more widths >= 1, "
                   "e.g. [128]")
        if conv and self.spt:
            reject("vit.spt", self.spt, "false when vit.tokenizer is conv (SPT is a patch tokenizer)")
        if conv and (patch < 2 or patch & (patch - 1)):
            reject("vit.patch_size", patch, "a power of two >= 2 when vit.tokenizer is conv (the "
                   "token stride: log2(patch_size) conv + pool/2 stages), e.g. 4, 8, 16")
        return self


def _build_kwargs(cfg: Vit, num_classes: int) -> dict[str, Any]:
    return {"image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "projection_dim": cfg.projection_dim, "num_heads": cfg.num_heads, "layers": cfg.layers,
            "mlp_head": list(cfg.mlp_head), "dropout": cfg.dropout, "num_classes": num_classes,
            "spt": cfg.spt, "lsa": cfg.lsa, "drop_path": cfg.drop_path, "tokenizer": cfg.tokenizer,
            "seq_pool": cfg.seq_pool}   # conv tokenizer: log2(patch_size) stages (layers.conv_stages)


def _name(build: dict[str, Any]) -> str:
    tricks = "+".join(name for name, on in (("conv tokenizer", build.get("tokenizer") == "conv"),
                                            ("SPT", build.get("spt")), ("LSA", build.get("lsa"))) if on)
    return "ViT from scratch" + (f" ({tricks})" if tricks else "")


FAMILY = register(Family(
    name="vit", kind="ViT", stage="train_vit", section=Vit, phases={"vit_scratch": "scratch"},
    builder=later("vitbench.models.vit.layers:build_vit"), build_kwargs=_build_kwargs,
    preprocess=lambda cfg: "tf",
    set_trainable=freeze_all, saliency=MEAN_ROLLOUT, base_name=_name,
    attention=later("vitbench.models.vit.layers:attention_weights"),
    recipe=lambda cfg, phase: cfg.recipe,
    figure=later("vitbench.models.vit.patches:draw_tokens"), figure_name="vit_patches.png",
    keras_layers="vitbench.models.vit.layers",
))
