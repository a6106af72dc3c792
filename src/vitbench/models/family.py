"""What a model family declares about itself (`Family`), and the pieces families share.

A *family* is one kind of model with its own params.yaml section and training stage: `cnn`
(a keras.applications base under a new head), `vit` (the from-scratch ViT), `vit_ft` (a pretrained
ViT). Each lives in its own package, `vitbench.models.<name>`, whose `__init__` declares
`FAMILY = register(Family(...))`: its section's dataclass, its model ids (the contract's ids, each
a phase of the family's training), builder, preprocessing, head layers, saliency method and
display names. Nothing outside that package says any of it again; `vitbench.models.registry`
only collects the declarations (docs/design.md, "Adding a model").

A declaration imports no Keras: it names its Keras code with `later("module:function")`, imported
on the first call. So reading the declarations (the model ids, params sections and checks that
`vitbench sweep`, `seeds`, `cv`, `summarize` and `predict`'s argument errors need) starts no
TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitbench.core.config import PHASES, PhaseRecipe

if TYPE_CHECKING:   # Keras is imported by the families that build models, not by this declaration
    import keras


def later(target: str) -> Callable[..., Any]:
    """The function `target` ("package.module:name"), its module imported on the first call.
    `vitbench.core.deps` counts a `later("vitbench...")` as an import of that module."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"later({target!r}): expected 'package.module:function'")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__module__, call.__name__, call.__qualname__ = module, name, name   # what it stands for
    return call


PHASE_LABELS = {"transfer": "transfer", "finetune": "fine-tuned", "scratch": "from scratch"}


@dataclass(frozen=True)
class ModelSpec:
    """One of the contract's model ids: a family trained in one phase."""

    id: str
    family: str               # the family's name (its package and params section)
    phase: str                # transfer, finetune or scratch
    meant_pretrained: bool    # starts from pretrained weights when they are available


@dataclass(frozen=True)
class Saliency:
    """How evaluate draws where a family's model looks (`vitbench.evaluate.saliency`):
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
    """One kind of model; `cfg` below is an instance of `section`, the family's params section."""

    name: str                                                 # package, params section, record's `family`
    kind: str                                                 # side of the comparison: CNN or ViT
    stage: str                                                # the dvc.yaml stage that trains it
    section: type                                             # its params section's dataclass
    phases: dict[str, str]                                    # model id -> one of PHASES, in order
    builder: Callable[..., keras.Model]
    build_kwargs: Callable[[Any, int], dict[str, Any]]        # (cfg, num_classes) -> builder kwargs
    preprocess: Callable[[Any], str]                          # cfg -> data.pipeline.PREPROCESS key
    set_trainable: Callable[[keras.Model, bool], None]        # freeze/unfreeze the pretrained part
    saliency: Saliency                                        # attention.png / gradcam.png
    base_name: Callable[[dict[str, Any]], str]                # build kwargs -> "MobileNetV2", ...
    head_layers: tuple[str, ...] = ("head",)                  # the new head, in order (feature cache)
    weights_kwarg: str | None = None                          # builder argument loading weights
    load_pretrained: Callable[[Any, dict[str, Any]], tuple[keras.Model, dict[str, Any]]] | None = None
    weights_label: Callable[[Any], str] | None = None         # cfg -> "mobilenetv2 imagenet weights"
    check_weights: Callable[[Any], None] | None = None        # cfg -> ConfigError for a bad setting
    attention: Callable[[keras.Model, np.ndarray], list[np.ndarray]] | None = None
    recipe: Callable[[Any, str], PhaseRecipe] = lambda cfg, phase: getattr(cfg, phase)
    # (cfg, phase) -> that phase's recipe (lr, weight decay, warm-up, label smoothing)
    from_scratch: Callable[[keras.Model], Any] | None = None  # a transfer phase without weights
    figure: Callable[[Any, np.ndarray, Path], None] | None = None  # (cfg, a training image, path)
    figure_name: str = ""                                     # plots/<figure_name>, drawn by its stage
    keras_layers: str | None = None                           # module of its serializable layers

    @property
    def module(self) -> str:
        """The package that declares the family (its code, as dvc.yaml and backups count it)."""
        return f"vitbench.models.{self.name}"

    @property
    def params(self) -> tuple[tuple[str, type], ...]:
        """(section name, dataclass): what `vitbench.core.config.load_params` validates for it."""
        return ((self.name, self.section),)

    def __post_init__(self) -> None:
        unknown = set(self.phases.values()) - set(PHASES)
        if unknown:
            raise ValueError(f"family {self.name}: phases {sorted(unknown)} are not in {PHASES}")

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """The model ids its stage trains, in training order."""
        return tuple(ModelSpec(model_id, self.name, phase, phase != "scratch")
                     for model_id, phase in self.phases.items())

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
        """Set what trains in `phase`: transfer freezes the pretrained part (a family with
        `from_scratch` trains its whole base instead when no weights were loaded), finetune
        unfreezes it, scratch trains everything. Recompile afterwards."""
        if phase == "transfer" and not pretrained and self.from_scratch is not None:
            self.from_scratch(model)
        else:
            self.set_trainable(model, phase != "transfer")


# --- shared by the families ---------------------------------------------------------------------

def freeze_all(model: keras.Model, trainable: bool) -> None:
    """Every layer follows `trainable` (a model with no pretrained part)."""
    for layer in model.layers:
        layer.trainable = trainable


def freeze_all_but_head(model: keras.Model, trainable: bool) -> None:
    """Every layer but "head" follows `trainable`; the head always trains."""
    for layer in model.layers:
        if layer.name != "head":
            layer.trainable = trainable


def block_outputs(model: keras.Model, outputs: list[Any], x: np.ndarray) -> list[np.ndarray]:
    """Evaluate symbolic tensors of a functional `model` on `x` (inference mode) as numpy arrays."""
    import keras

    if not outputs:
        raise ValueError(f"model {model.name} has no transformer blocks")
    probe = keras.Model(model.input, outputs)
    result = probe(x, training=False)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(keras.ops.convert_to_numpy(r)) for r in result]
