"""The CNN baseline family: a keras.applications base under a new head (params section `cnn`,
stage train_cnn, models cnn_transfer and cnn_finetuned). Architectures: `archs.ARCHS`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Union

from pydantic import Field
from pydantic import model_validator as check

from vitbench.core.config import PhaseRecipe
from vitbench.core.config.errors import reject
from vitbench.core.config.types import HEX64, Bool, Epochs, Fraction, Int, Pretrained, Str, section
from vitbench.models.cnn.archs import ARCHS, get_arch
from vitbench.models.family import GRADCAM, Family, later
from vitbench.models.registry import register


@section
class Cnn:
    arch: Str               # a key of archs.ARCHS (checked below, so a new entry is valid at once)
    image_size: Annotated[Int, Field(ge=32, le=1024)]
    pretrained: Pretrained
    dropout: Fraction
    weights: Str
    weights_sha256: Union[Str, None]
    feature_cache: Bool
    transfer: PhaseRecipe
    finetune: PhaseRecipe
    epochs: Epochs          # each phase's epochs; null = train.epochs

    @check(mode="after")
    def _check(self) -> Cnn:
        if self.arch not in ARCHS:
            reject("cnn.arch", self.arch, f"one of {', '.join(ARCHS)}")
        w = self.weights  # existence and content are checked where the weights are loaded
        if w != "imagenet" and not re.match(r"^https?://[^/]+/.*[^/]$", w) and not w.endswith(".h5"):
            reject("cnn.weights", w, "imagenet, an http(s) URL of a file, or the path of a no-top "
                   ".h5 weights file")
        sha = self.weights_sha256
        if sha is not None and not HEX64.fullmatch(sha):
            reject("cnn.weights_sha256", sha, "null or a sha256 of 64 hex digits")
        if sha is not None and w == "imagenet":
            reject("cnn.weights_sha256", sha, "null when cnn.weights is imagenet (Keras names and "
                   "checks those files itself)")
        return self


def _build_kwargs(cfg: Cnn, num_classes: int) -> dict[str, Any]:
    return {"arch": cfg.arch, "image_size": cfg.image_size, "num_classes": num_classes,
            "dropout": cfg.dropout}


build_cnn = later("vitbench.models.cnn.builder:build_cnn")


def _pretrained(cfg: Cnn, build: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    return build_cnn(**build, weights=cfg.weights, weights_sha256=cfg.weights_sha256), build


FAMILY = register(Family(
    name="cnn", kind="CNN", stage="train_cnn", section=Cnn,
    phases={"cnn_transfer": "transfer", "cnn_finetuned": "finetune"},
    builder=build_cnn, build_kwargs=_build_kwargs,
    preprocess=lambda cfg: get_arch(cfg.arch).preprocess,
    set_trainable=later("vitbench.models.cnn.builder:freeze_base"), saliency=GRADCAM,
    base_name=lambda build: get_arch(build["arch"]).display,
    head_layers=("dropout", "head"),
    weights_kwarg="weights", load_pretrained=_pretrained,
    weights_label=lambda cfg: f"{cfg.arch} {cfg.weights} weights",
    from_scratch=later("vitbench.models.cnn.builder:train_base_from_scratch"),
))
