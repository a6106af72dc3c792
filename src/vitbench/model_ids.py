"""The contract's model ids and the CNN architectures, as plain data (no Keras, no TensorFlow).

One table shared by `vitbench.config` (valid `cnn.arch`, the `--model` choices), the model registry
(`vitbench.models.registry` adds each family's builder and kind) and dvc.yaml (its `evaluate`
foreach list and artifacts, checked against MODEL_IDS by tests/test_dvc_deps.py). Whether a model
is a CNN or a ViT is the registry's to say, through its family: consumers of the evaluate outputs
read `kind` from metrics/<id>.json, never from the id.
"""

from __future__ import annotations

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
