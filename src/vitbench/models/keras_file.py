"""models/<id>/model.keras: the whole model in Keras' own format, for anyone to load.

    import vitbench, keras
    model = keras.saving.load_model("models/vit_scratch/model.keras")

`register_layers` registers every custom layer a vitbench model holds by importing the module each
family names as its `keras_layers` (the from-scratch ViT's layers, package "vitbench") and
vit-keras' layers (ClassToken, AddPositionEmbs, MultiHeadSelfAttention, TransformerBlock, package
"Custom"). `import vitbench` calls it as soon as Keras is imported
(`vitbench.register_layers_with_keras`), so a plain `keras.saving.load_model` finds them without
`safe_mode=False`. (Registering layers changes no stage's output, so the stages' dvc.yaml deps do
not list the other families for it.)

vit-keras builds its models with one Python `Lambda` (`ExtractToken`: the class token, `v[:, 0]`),
which Keras refuses to load in safe mode; `portable` swaps it for `ClassTokenOutput`, a layer
that does the same and serializes by name. The model's weights (and so its predictions) are
unchanged. Any other `Lambda` is refused when saving, not found by the user when loading.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import keras
from vit_keras import layers as vit_layers  # noqa: F401 - registers vit-keras' layers ("Custom>...")

from vitbench.models import registry

log = logging.getLogger(__name__)

KERAS_FILE = "model.keras"
EXTRACT_TOKEN = "ExtractToken"   # the name vit-keras gives its class-token Lambda


@keras.saving.register_keras_serializable(package="vitbench")
class ClassTokenOutput(keras.layers.Layer):
    """The class token of a token sequence: [B, tokens, d] -> [B, d] (vit-keras' ExtractToken)."""

    def call(self, tokens: Any, mask: Any = None) -> Any:  # mask: what cloning the Lambda passes
        return tokens[:, 0]

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[-1])


def portable(model: keras.Model) -> keras.Model:
    """`model`, or a copy with the same weights whose vit-keras `ExtractToken` Lambda is a
    `ClassTokenOutput`; ValueError naming any other Lambda (Python code Keras will not load)."""
    lambdas = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
    others = [name for name in lambdas if name != EXTRACT_TOKEN]
    if others:
        raise ValueError(f"model {model.name} holds Lambda layer(s) {', '.join(others)}: a "
                         f"{KERAS_FILE} file would need safe_mode=False to load")
    if not lambdas:
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.Lambda):
            return ClassTokenOutput(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def save_keras(model: keras.Model, path: str | Path) -> None:
    """Write `model` (uncompiled, portable) to the .keras file `path` (the caller makes it atomic)."""
    portable(model).save(Path(path))


def register_layers() -> None:
    """Register the layers of every model family with Keras by importing each family's
    `keras_layers` module. Called when Keras is imported, which may happen while a vitbench module
    is itself being imported: a module that cannot be imported yet (its import is under way)
    registers its layers when that import completes."""
    for name in registry.family_names():
        try:
            layers = registry.family(name).keras_layers
            if layers is not None:
                importlib.import_module(layers)
        except (ImportError, AttributeError) as exc:   # a circular import in flight
            log.debug("layers of family %s not registered yet: %s", name, exc)
