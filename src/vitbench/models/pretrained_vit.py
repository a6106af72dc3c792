"""The pretrained Vision Transformer: vit-keras ViT-B/16 or ViT-B/32 under a new softmax head.

`build_vit_ft` returns ONE flat functional model: the vit-keras layers (embedding, class token,
position embedding, `Transformer_encoderblock_<n>` blocks, encoder norm, optional `pre_logits`) at
top level, then a Dense softmax "head" (float32). So `vit_keras.visualize.attention_map` and
`vit_keras.utils.load_weights_numpy` work on it unchanged.

Weights are the original Flax checkpoints as .npz files (vit-keras' release files, or any file with
the same keys), resolved by `resolve_vit_weights` through the Keras cache (`$KERAS_HOME/weights`).
"""

from __future__ import annotations

import logging
import pickle
import re
import urllib.parse
import warnings
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
from vit_keras import layers as vit_layers
from vit_keras import utils as vit_utils
from vit_keras import vit as vit_keras

from vitbench.errors import ConfigError, DataError
from vitbench.models.vit import block_outputs

log = logging.getLogger(__name__)

VARIANTS = {"b16": 16, "b32": 32}  # variant -> patch size; all use vit_keras.vit.CONFIG_B
KNOWN_WEIGHTS = tuple(vit_keras.WEIGHTS)  # "imagenet21k", "imagenet21k+imagenet2012"
PRE_LOGITS_KEY = "pre_logits/kernel"
# What np.load and vit-keras raise for a file that is not (or does not fit) a ViT checkpoint.
NPZ_ERRORS = (KeyError, ValueError, AssertionError, OSError, zipfile.BadZipFile,
              pickle.UnpicklingError)


def patch_size(variant: str) -> int:
    """Patch size of a variant, or a ConfigError naming the allowed ones."""
    if variant not in VARIANTS:
        raise ConfigError("vit_ft.variant", variant, f"one of {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def variant_name(variant: str) -> str:
    """"b32" -> "ViT-B/32"."""
    return f"ViT-B/{patch_size(variant)}"


def build_vit_ft(variant: str, image_size: int, num_classes: int,
                 representation_size: int | None = None, weights_path: str | None = None,
                 config: dict[str, Any] | None = None) -> keras.Model:
    """vit-keras ViT-B (no top) + new Dense softmax "head", as one flat functional model.

    representation_size: 768 for "imagenet21k" weights (they have a `pre_logits` layer), None
    for "imagenet21k+imagenet2012". weights_path: an .npz to load (the head stays random).
    config: overrides of vit_keras.vit.CONFIG_B (e.g. tiny models in tests).
    """
    patch = patch_size(variant)
    if image_size % patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the {variant} patch size {patch}")
    base = vit_keras.build_model(
        image_size=image_size, patch_size=patch, classes=num_classes, include_top=False,
        representation_size=representation_size, name=f"vit-{variant}",
        **{**vit_keras.CONFIG_B, **(config or {})})
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="head")(base.output)
    model = keras.Model(base.input, outputs, name=f"vit_ft_{variant}")
    if weights_path is not None:
        load_npz_weights(model, Path(weights_path), image_size // patch)
    return model


def load_npz_weights(model: keras.Model, path: Path, patches_per_side: int) -> None:
    """Load a vit-keras/Flax .npz into every layer but the head (position embeddings resized to
    the model's patch grid); DataError when the file is missing or does not fit the model."""
    if not path.is_file():
        raise DataError(f"ViT weights file {path} does not exist")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vit_utils.load_weights_numpy(model=model, params_path=str(path), pretrained_top=False,
                                         num_x_patches=patches_per_side,
                                         num_y_patches=patches_per_side)
    except NPZ_ERRORS as exc:
        raise DataError(f"ViT weights file {path} does not fit {model.name}: "
                        f"{type(exc).__name__}: {exc}") from exc
    for w in caught:
        message = str(w.message)
        if not message.startswith("Only set"):  # the new head is expected to stay unset
            log.warning("%s: %s", path.name, message)
    log.info("loaded ViT weights from %s", path)


def representation_size(weights_file: str | Path) -> int | None:
    """Width of the `pre_logits` layer an .npz file has (768 for imagenet21k), else None."""
    try:
        with np.load(weights_file, allow_pickle=False) as params:
            if PRE_LOGITS_KEY in params.files:
                return int(params[PRE_LOGITS_KEY].shape[-1])
    except NPZ_ERRORS as exc:
        raise DataError(f"ViT weights file {weights_file} is not a readable .npz: {exc}") from exc
    return None


def check_weights_setting(weights: str) -> None:
    """ConfigError unless `vit_ft.weights` is a release name, an http(s) URL or an existing file
    (checked where the weights are used, not when params.yaml is read)."""
    if weights in KNOWN_WEIGHTS or re.match(r"^https?://", weights) \
            or Path(weights).expanduser().is_file():
        return
    raise ConfigError("vit_ft.weights", weights,
                      f"{' or '.join(KNOWN_WEIGHTS)}, an http(s) URL, or an existing .npz file")


def resolve_vit_weights(weights: str, variant: str) -> Path:
    """Local path of the weights named by `vit_ft.weights`: a vit-keras release name
    (imagenet21k, imagenet21k+imagenet2012) or an http(s) URL -> downloaded into the Keras cache
    (`$KERAS_HOME/weights`, as vit-keras does) unless already there; else an existing local file."""
    from vitbench.models import cached_download

    if weights in KNOWN_WEIGHTS:
        fname = f"ViT-B_{patch_size(variant)}_{weights}.npz"
        return cached_download(fname, f"{vit_keras.BASE_URL}/{fname}", "weights")
    if re.match(r"^https?://", weights):
        fname = Path(urllib.parse.unquote(urllib.parse.urlsplit(weights).path)).name
        if not fname:
            raise ConfigError("vit_ft.weights", weights, "a URL that ends in a file name")
        return cached_download(fname, weights, "weights")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise DataError(f"vit_ft.weights: {weights} is neither {' nor '.join(KNOWN_WEIGHTS)}, "
                        "an http(s) URL, nor an existing file")
    return path


def attention_weights(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """One array [batch, heads, tokens, tokens] per vit-keras TransformerBlock (output [1])."""
    blocks = [layer for layer in model.layers if isinstance(layer, vit_layers.TransformerBlock)]
    return block_outputs(model, [block.output[1] for block in blocks], x)
