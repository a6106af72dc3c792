"""The model families and model ids: the one table that says what each kind of model is.

A *family* (`cnn`, `vit_scratch`, `vit_ft`) knows its params.yaml section, its builder and the
builder argument that loads pretrained weights, how it reads its input size, preprocessing and
build arguments from its section, how to freeze it for a training phase, where each phase's
recipe (lr, weight decay, warm-up, label smoothing) is in its section, its attention function,
its saliency map (Grad-CAM or attention rollout) and its display name. A *model id* (the
contract's five) is a family trained in one phase (`transfer`, `finetune` or `scratch`), meant to
start from pretrained weights or not; the ids are the Keras-free table `vitbench.core.model_ids`.
`identity(model_id)` is what evaluate writes into metrics/<id>.json about the model (family,
kind, meant to be pretrained): everything downstream reads those fields, never the id.

Builders are referenced through `BuilderModule`, imported only when called, so the registry
pulls no builder into a stage's code; the stage scripts that run a family import its builder
module (`Family.code`), which is what dvc.yaml lists and the training fingerprint hashes.

Adding a family is one `Family(...)` entry in FAMILIES (plus its params section in config.py,
its model ids in `vitbench.core.model_ids.MODELS` and an import of its builder in the stage scripts
that train and evaluate it);
adding a CNN architecture is one entry in `vitbench.models.cnn.ARCHS`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from vitbench.core import model_ids
from vitbench.core.config import LearningRate
from vitbench.core.errors import ConfigError
from vitbench.core.model_ids import ModelSpec

log = logging.getLogger(__name__)



class BuilderModule:
    """A family's builder module (vitbench.models.cnn, .vit, .pretrained_vit), imported when one
    of its functions is first called. So importing the registry imports no builder: a stage
    depends on the builders it runs, which its stage script imports (tests/test_dvc_deps.py), and
    editing the CNN builder does not re-train the from-scratch ViT."""

    def __init__(self, module: str) -> None:
        self.module = module

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        module = self.module

        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(module), name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        return call


cnn = BuilderModule("vitbench.models.cnn")
vit = BuilderModule("vitbench.models.vit")
pretrained_vit = BuilderModule("vitbench.models.pretrained_vit")

PHASES = ("transfer", "finetune", "scratch")
PHASE_LABELS = {"transfer": "transfer", "finetune": "fine-tuned", "scratch": "from scratch"}
SCRATCH_BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Saliency:
    """How evaluate draws where a family's model looks (`vitbench.evaluate.saliency.saliency_maps`):
    Grad-CAM for a model without attention, else attention rollout read from the class token's
    row (`class_token`) or averaged over all tokens; saved as `figure`, `method` printed on it."""

    figure: str
    method: str
    class_token: bool = False


GRADCAM = Saliency("gradcam.png", "Grad-CAM (Selvaraju et al. 2017) of the predicted class on the "
                                  "base's last feature map; red = most evidence")
MEAN_ROLLOUT = Saliency("attention.png", "attention rollout (Abnar & Zuidema 2020) averaged over "
                                         "all patch tokens; red = most attention")
CLASS_TOKEN_ROLLOUT = Saliency("attention.png", "attention rollout (Abnar & Zuidema 2020) from the "
                                                "class token; red = most attention", class_token=True)


@dataclass(frozen=True)
class Family:
    """One kind of model; `cfg` below is the family's params section (config.Cnn, .Vit, .VitFt)."""

    name: str                                                 # the `family` of record.json
    section: str                                              # its params.yaml section
    kind: str                                                 # side of the comparison: CNN or ViT
    builder: Callable[..., keras.Model]
    build_kwargs: Callable[[Any, int], dict[str, Any]]        # (cfg, num_classes) -> builder kwargs
    preprocess: Callable[[Any], str]                          # cfg -> data.pipeline.PREPROCESS key
    set_trainable: Callable[[keras.Model, bool], None]        # freeze/unfreeze the pretrained part
    saliency: Saliency                                        # attention.png / gradcam.png
    base_name: Callable[[dict[str, Any]], str]                # build kwargs -> "MobileNetV2", ...
    weights_kwarg: str | None = None                          # builder argument loading weights
    load_pretrained: Callable[[Any, dict[str, Any]], tuple[keras.Model, dict[str, Any]]] | None = None
    weights_label: Callable[[Any], str] | None = None         # cfg -> "mobilenetv2 ImageNet weights"
    check_weights: Callable[[Any], None] | None = None        # cfg -> ConfigError for a bad setting
    attention: Callable[[keras.Model, np.ndarray], list[np.ndarray]] | None = None
    recipe: Callable[[Any, str], LearningRate] = lambda cfg, phase: getattr(cfg, phase)
    # (cfg, phase) -> that phase's recipe (lr, weight decay, warm-up, label smoothing)
    code: str = ""                                            # its builder module (BuilderModule)

    def input_spec(self, cfg: Any) -> tuple[int, str]:
        """(image size, preprocess name) the family trains on with section `cfg`."""
        return int(cfg.image_size), self.preprocess(cfg)

    def rebuild(self, build: dict[str, Any]) -> keras.Model:
        """The architecture of `build` with random weights (never downloads)."""
        kwargs = dict(build)
        if self.weights_kwarg is not None:
            kwargs[self.weights_kwarg] = None
        return self.builder(**kwargs)

    def prepare_phase(self, model: keras.Model, phase: str, pretrained: bool) -> None:
        """Set what trains in `phase`: transfer freezes the pretrained part (a CNN with random
        weights trains its whole base instead: `train_base_from_scratch`), finetune unfreezes it,
        scratch trains everything. Recompile afterwards."""
        if phase == "transfer" and self.name == "cnn" and not pretrained:
            train_base_from_scratch(model)
        else:
            self.set_trainable(model, phase != "transfer")


# --- per-family pieces ---------------------------------------------------------------------------

def _freeze_cnn(model: keras.Model, trainable: bool) -> None:
    """Layer "base" follows `trainable`; its BatchNormalization layers stay frozen, hence in
    inference mode: Keras 3 lets `fit`'s training=True override the training=False the base is
    called with (keras-team/keras#20285), and only a frozen BatchNormalization ignores it."""
    base = model.get_layer("base")
    base.trainable = trainable
    for layer in base.layers:  # keras.applications bases are flat
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _freeze_all_but_head(model: keras.Model, trainable: bool) -> None:
    for layer in model.layers:
        if layer.name != "head":
            layer.trainable = trainable


def _freeze_all(model: keras.Model, trainable: bool) -> None:
    for layer in model.layers:
        layer.trainable = trainable


def train_base_from_scratch(model: keras.Model) -> int:
    """Make a randomly initialised CNN's whole base trainable, BatchNormalization included.

    Without pretrained weights there is nothing to transfer: a frozen random base hands its head
    next to nothing (the offline demo's MobileNetV2 stayed at 15% on 10 classes, even with its
    BatchNorm statistics re-estimated). So the first phase trains the network from scratch.
    BatchNormalization runs in training mode with momentum 0.9, so its moving statistics catch up
    within a few epochs (keras.applications' 0.999 needs thousands of steps; with it validation
    stays at chance while training accuracy climbs). Returns the number of BatchNorm layers.
    """
    base = model.get_layer("base")
    base.trainable = True
    layers = [layer for layer in _all_layers(base)
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.trainable = True
        layer.momentum = SCRATCH_BN_MOMENTUM
    log.info("random weights: nothing to transfer, so the whole %s trains from scratch "
             "(BatchNorm momentum %.1f)", base.name, SCRATCH_BN_MOMENTUM)
    return len(layers)


def _all_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer inside `model`, nested models included."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found


def _cnn_kwargs(cfg: Any, num_classes: int) -> dict[str, Any]:
    return {"arch": cfg.arch, "image_size": cfg.image_size, "num_classes": num_classes,
            "dropout": cfg.dropout}


def _vit_kwargs(cfg: Any, num_classes: int) -> dict[str, Any]:
    return {"image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "projection_dim": cfg.projection_dim, "num_heads": cfg.num_heads, "layers": cfg.layers,
            "mlp_head": list(cfg.mlp_head), "dropout": cfg.dropout, "num_classes": num_classes,
            "spt": cfg.spt, "lsa": cfg.lsa, "drop_path": cfg.drop_path, "tokenizer": cfg.tokenizer,
            "seq_pool": cfg.seq_pool}   # conv tokenizer: log2(patch_size) stages (vit.conv_stages)


def _cnn_pretrained(cfg: Any, build: dict[str, Any]) -> tuple[keras.Model, dict[str, Any]]:
    return cnn.build_cnn(**build, weights=cfg.weights, weights_sha256=cfg.weights_sha256), build


def _scratch_name(build: dict[str, Any]) -> str:
    tricks = "+".join(name for name, on in (("conv tokenizer", build.get("tokenizer") == "conv"),
                                            ("SPT", build.get("spt")), ("LSA", build.get("lsa"))) if on)
    return "ViT from scratch" + (f" ({tricks})" if tricks else "")


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("cnn", "cnn", "CNN", cnn.build_cnn, _cnn_kwargs,
           preprocess=lambda cfg: cnn.get_arch(cfg.arch).preprocess,
           set_trainable=_freeze_cnn, saliency=GRADCAM,
           base_name=lambda build: cnn.get_arch(build["arch"]).display,
           weights_kwarg="weights", load_pretrained=_cnn_pretrained,
           weights_label=lambda cfg: f"{cfg.arch} {cfg.weights} weights", code=cnn.module),
    Family("vit_scratch", "vit", "ViT", vit.build_vit, _vit_kwargs,
           preprocess=lambda cfg: "vit", set_trainable=_freeze_all, saliency=MEAN_ROLLOUT,
           base_name=_scratch_name,
           attention=vit.attention_weights, recipe=lambda cfg, phase: cfg.recipe,
           code=vit.module),
    Family("vit_ft", "vit_ft", "ViT", pretrained_vit.build_vit_ft, pretrained_vit.build_kwargs,
           preprocess=pretrained_vit.normalization, set_trainable=_freeze_all_but_head,
           saliency=CLASS_TOKEN_ROLLOUT, base_name=pretrained_vit.base_name,
           weights_kwarg="weights_path", load_pretrained=pretrained_vit.load_pretrained,
           weights_label=lambda cfg: f"ViT-{cfg.variant} {cfg.weights} weights",
           check_weights=lambda cfg: pretrained_vit.check_weights_setting(cfg.weights),
           attention=pretrained_vit.attention_weights, code=pretrained_vit.module),
)}

MODELS: dict[str, ModelSpec] = model_ids.MODELS     # the contract's ids (Keras-free table)


def family_of_section(section: str) -> Family:
    """The family whose params.yaml section is `section` (cnn, vit, vit_ft)."""
    return next(f for f in FAMILIES.values() if f.section == section)


def family(name: str) -> Family:
    """The family called `name`, or a ValueError naming the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"family = {name!r} is not one of {', '.join(FAMILIES)}") from None


def model_spec(model_id: str) -> ModelSpec:
    """The spec of a contract model id, or a ConfigError naming the known ones."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise ConfigError("model id", model_id, f"one of {', '.join(MODELS)}") from None


def models_of(family_name: str) -> tuple[ModelSpec, ...]:
    """The model ids a family's stage trains, in training order."""
    return tuple(m for m in MODELS.values() if m.family == family_name)


def kind(model_id: str) -> str:
    """CNN or ViT: the side of the comparison the model id's family is on."""
    return FAMILIES[model_spec(model_id).family].kind


def identity(model_id: str) -> dict[str, Any]:
    """What metrics/<id>.json says about the model itself (written by evaluate, read by compare,
    the report and `vitbench seeds`): its family, kind (CNN or ViT) and whether it is meant to
    start from pretrained weights. Strings and a bool: three columns in `dvc metrics show`."""
    spec = model_spec(model_id)
    return {"family": spec.family, "kind": kind(model_id), "meant_pretrained": spec.meant_pretrained}


def display_name(model_id: str, family_name: str, build: dict[str, Any]) -> str:
    """"MobileNetV2 (fine-tuned)", "ViT-B/32 (transfer)", "ViT from scratch (SPT+LSA)"."""
    base = family(family_name).base_name(build)
    if len({m.phase for m in models_of(family_name)}) < 2:   # one phase: nothing to tell apart
        return base
    return f"{base} ({PHASE_LABELS[model_spec(model_id).phase]})"
