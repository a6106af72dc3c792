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
import tempfile
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
BLOCKS = vit_keras.CONFIG_B["num_layers"]  # 12 encoder blocks; `blocks` keeps the first N
BLOCK_KEY = re.compile(r"^Transformer/encoderblock_(\d+)/")
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


def variant_name(variant: str, blocks: int = BLOCKS) -> str:
    """"b32" -> "ViT-B/32"; with 6 of its 12 blocks "ViT-B/32 (6 blocks)"."""
    name = f"ViT-B/{patch_size(variant)}"
    return name if blocks == BLOCKS else f"{name} ({blocks} block{'s' if blocks > 1 else ''})"


def build_vit_ft(variant: str, image_size: int, num_classes: int,
                 representation_size: int | None = None, weights_path: str | None = None,
                 config: dict[str, Any] | None = None, blocks: int = BLOCKS) -> keras.Model:
    """vit-keras ViT-B (no top) + new Dense softmax "head", as one flat functional model.

    representation_size: 768 for "imagenet21k" weights (they have a `pre_logits` layer), None
    for "imagenet21k+imagenet2012". weights_path: an .npz to load (the head stays random).
    blocks: keep only the first N encoder blocks (a smaller, faster model; the weights file's
    later blocks are left out). config: overrides of vit_keras.vit.CONFIG_B (tiny test models).
    """
    patch = patch_size(variant)
    if image_size % patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the {variant} patch size {patch}")
    if not 1 <= blocks <= BLOCKS:
        raise ValueError(f"blocks = {blocks}: a ViT-B has 1 to {BLOCKS} encoder blocks")
    base = vit_keras.build_model(
        image_size=image_size, patch_size=patch, classes=num_classes, include_top=False,
        representation_size=representation_size, name=f"vit-{variant}",
        **{**vit_keras.CONFIG_B, "num_layers": blocks, **(config or {})})
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="head")(base.output)
    model = keras.Model(base.input, outputs, name=f"vit_ft_{variant}")
    if weights_path is not None:
        load_npz_weights(model, Path(weights_path), image_size // patch)
    return model


def load_npz_weights(model: keras.Model, path: Path, patches_per_side: int) -> None:
    """Load a vit-keras/Flax .npz into every layer but the head (position embeddings resized to
    the model's patch grid; a model with fewer encoder blocks takes the file's first ones);
    DataError when the file is missing or does not fit the model."""
    if not path.is_file():
        raise DataError(f"ViT weights file {path} does not exist")
    blocks = sum(layer.name.startswith("Transformer_encoderblock_") for layer in model.layers)
    try:
        with warnings.catch_warnings(record=True) as caught, \
                tempfile.TemporaryDirectory(prefix="vitbench-npz-") as tmp:
            warnings.simplefilter("always")
            source = _first_blocks(path, blocks, Path(tmp))
            vit_utils.load_weights_numpy(model=model, params_path=str(source), pretrained_top=False,
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


def _first_blocks(path: Path, blocks: int, tmp: Path) -> Path:
    """`path`, or a copy in `tmp` without the encoder blocks past the first `blocks` (vit-keras
    loads a file only into a model with as many blocks)."""
    with np.load(path, allow_pickle=False) as params:
        numbers = {int(m.group(1)) for key in params.files if (m := BLOCK_KEY.match(key))}
        if len(numbers) <= blocks:
            return path
        kept = {key: params[key] for key in params.files
                if not (m := BLOCK_KEY.match(key)) or int(m.group(1)) < blocks}
    out = tmp / path.name
    np.savez(out, **kept)
    log.info("%s: keeping the first %d of its %d encoder blocks", path.name, blocks, len(numbers))
    return out


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
