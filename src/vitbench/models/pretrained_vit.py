"""The pretrained Vision Transformer: a vit-keras ViT (Ti, S, B or L; patch 16 or 32) under a new
softmax head.

`build_vit_ft` returns ONE flat functional model: the vit-keras layers (embedding, class token,
position embedding, `Transformer_encoderblock_<n>` blocks, encoder norm, optional `pre_logits`) at
top level, then a Dense softmax "head" (float32). So `vit_keras.visualize.attention_map` and
`vit_keras.utils.load_weights_numpy` work on it unchanged.

`vitbench.model_ids.VIT_VARIANTS` is the one table of what each `vit_ft.variant` is (patch size,
depth, where its official ImageNet weights are published, the widths of Ti and S); `vit_config`
adds vit-keras' CONFIG_B and CONFIG_L for B and L when a model is built. Weights are Flax checkpoints
as .npz files (vit-keras' release files for B and L, the AugReg files of Steiner et al. 2021,
"How to train your ViT", for Ti and S, or any local file or URL with the same keys, such as a
DeiT checkpoint in that layout), resolved by `resolve_vit_weights` through the Keras cache
(`$KERAS_HOME/weights`). A file whose width, heads, MLP, patch or depth does not fit the variant
is a `WeightsFileError` naming the file, what it holds and which variant it would fit.

Normalization belongs to the weights (`vit_ft.normalize: auto | tf | torch`, `normalization`):
Google's checkpoints (vit-keras' and AugReg) expect inputs in [-1, 1] ("tf"); DeiT expects the
ImageNet mean/std ("torch"). `auto` takes "torch" for a local file or URL whose file name
contains "deit" (any case) and "tf" for everything else, and logs the choice; the record's
`preprocess` keeps it for evaluate, predict, saliency and the corruption passes.
"""

from __future__ import annotations

import logging
import pickle
import re
import tempfile
import urllib.parse
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import keras
import numpy as np
from vit_keras import layers as vit_layers
from vit_keras import utils as vit_utils
from vit_keras import vit as vit_keras

from vitbench.errors import ConfigError, DataError
from vitbench.model_ids import VIT_VARIANTS, VitVariant
from vitbench.models import timm_weights
from vitbench.models.vit import block_outputs
from vitbench.models.weights import WeightsFileError

log = logging.getLogger(__name__)

AUGREG_URL = "https://storage.googleapis.com/vit_models/augreg"
AUGREG_IN1K = "--imagenet2012-steps_20k-lr_0.03-res_224"  # the ImageNet-1k fine-tuned AugReg files


def vit_config(variant: str) -> dict[str, Any]:
    """The vit_keras.vit.build_model arguments of a variant (as vit_keras.vit.CONFIG_B): vit-keras'
    own CONFIG_B or CONFIG_L, read now (so a test that shrinks it sees its change), else the
    width, heads, MLP and dropout of `model_ids.VIT_VARIANTS`."""
    spec = variant_spec(variant)
    if spec.arch is None:
        return dict(getattr(vit_keras, f"CONFIG_{spec.size}"))
    width, heads, mlp, dropout = spec.arch
    return {"hidden_size": width, "num_layers": spec.depth, "num_heads": heads, "mlp_dim": mlp,
            "dropout": dropout}


def depth(variant: str) -> int:
    """Encoder blocks of a whole variant (as vit_config builds it)."""
    return int(vit_config(variant)["num_layers"])


def release_file(variant: str, weights: str) -> tuple[str, str]:
    """(file name, URL) of the official weights `weights` (imagenet21k or
    imagenet21k+imagenet2012) of a variant."""
    spec = variant_spec(variant)
    if spec.augreg is None:
        fname = f"ViT-{spec.size}_{spec.patch}_{weights}.npz"
        return fname, f"{vit_keras.BASE_URL}/{fname}"
    fname = f"{spec.augreg}{AUGREG_IN1K if weights.endswith('imagenet2012') else ''}.npz"
    return fname, f"{AUGREG_URL}/{fname}"


BLOCK_KEY = re.compile(r"^Transformer/encoderblock_(\d+)/")
KNOWN_WEIGHTS = tuple(vit_keras.WEIGHTS)  # "imagenet21k", "imagenet21k+imagenet2012"
NORMALIZE = ("auto", "tf", "torch")       # vit_ft.normalize; tf and torch are PREPROCESS keys
PRE_LOGITS_KEY = "pre_logits/kernel"
# What np.load and vit-keras raise for a file that is not (or does not fit) a ViT checkpoint.
NPZ_ERRORS = (KeyError, ValueError, AssertionError, OSError, zipfile.BadZipFile,
              pickle.UnpicklingError)


def variant_spec(variant: str) -> VitVariant:
    """The table entry of a variant, or a ConfigError naming the allowed ones."""
    if variant not in VIT_VARIANTS:
        raise ConfigError("vit_ft.variant", variant, f"one of {', '.join(VIT_VARIANTS)}")
    return VIT_VARIANTS[variant]


def patch_size(variant: str) -> int:
    """Patch size of a variant, or a ConfigError naming the allowed ones."""
    return variant_spec(variant).patch


def lineage(weights: str | None) -> str:
    """"DeiT" when the weights file or URL's name contains "deit" (any case), else "ViT"."""
    if not weights or weights in KNOWN_WEIGHTS:
        return "ViT"
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(weights).path)).name
    return "DeiT" if "deit" in name.lower() else "ViT"


def variant_name(variant: str, blocks: int | None = None, family: str = "ViT") -> str:
    """"b32" -> "ViT-B/32"; with 6 of its 12 blocks "ViT-B/32 (6 blocks)"; DeiT weights on
    "ti16" -> "DeiT-Ti/16"."""
    spec = variant_spec(variant)
    name = f"{family}-{spec.size}/{spec.patch}"
    if blocks is None or blocks == depth(variant):
        return name
    return f"{name} ({blocks} block{'s' if blocks > 1 else ''})"


def base_name(build: dict[str, Any]) -> str:
    """The display name of a record's build arguments (registry.Family.base_name)."""
    return variant_name(build["variant"], build.get("blocks"), build.get("lineage", "ViT"))


def normalization(cfg: Any) -> str:
    """The input normalization of `cfg` (config.VitFt): "tf" ([-1, 1]) or "torch" (ImageNet
    mean/std); `auto` follows the weights (see the module docstring) and logs the choice."""
    if cfg.normalize not in NORMALIZE:
        raise ConfigError("vit_ft.normalize", cfg.normalize, " | ".join(NORMALIZE))
    if cfg.normalize != "auto":
        return str(cfg.normalize)
    timm = timm_weights.normalization(cfg.weights) if timm_weights.is_timm_weights(cfg.weights) \
        else None  # what the checkpoint's config.json asks for
    chosen = timm or ("torch" if lineage(cfg.weights) == "DeiT" else "tf")
    log.info("vit_ft.normalize: auto -> %s for weights %s (%s)", chosen, cfg.weights,
             "its config.json" if timm else
             "DeiT: ImageNet mean/std" if chosen == "torch" else "Google ViT: inputs in [-1, 1]")
    return chosen


def build_kwargs(cfg: Any, num_classes: int) -> dict[str, Any]:
    """Builder arguments of a params section, before the weights file decides
    `representation_size`; `blocks` only when it is not the variant's whole depth."""
    kwargs = {"variant": cfg.variant, "image_size": cfg.image_size, "num_classes": num_classes,
              "representation_size": None}
    if cfg.blocks is not None and cfg.blocks != depth(cfg.variant):
        kwargs["blocks"] = cfg.blocks
    return kwargs


def load_pretrained(cfg: Any, build: dict[str, Any]) -> tuple[keras.Model, dict[str, Any]]:
    """The model of `build` with the weights `cfg.weights` names, and its final build arguments
    (the file's `representation_size`; `lineage` "DeiT" for DeiT weights, which names the model)."""
    path = resolve_vit_weights(cfg.weights, cfg.variant)
    kwargs = {**build, "representation_size": representation_size(path)}
    if lineage(str(path)) != "ViT":
        kwargs["lineage"] = lineage(str(path))
    return build_vit_ft(**kwargs, weights_path=str(path)), kwargs


def build_vit_ft(variant: str, image_size: int, num_classes: int,
                 representation_size: int | None = None, weights_path: str | None = None,
                 config: dict[str, Any] | None = None, blocks: int | None = None,
                 lineage: str = "ViT") -> keras.Model:
    """vit-keras ViT of `variant` (no top) + new Dense softmax "head", as one flat functional model.

    representation_size: the width of the weights file's `pre_logits` layer (768 for vit-keras'
    "imagenet21k" B files), else None. weights_path: an .npz to load (the head stays random).
    blocks: keep only the first N encoder blocks (a smaller, faster model; the weights file's
    later blocks are left out); None: all of them. config: overrides of the variant's
    vit_keras.vit.build_model arguments (tiny test models). lineage: "ViT" or "DeiT", the name the
    weights give the model (it does not change the architecture).
    """
    spec = variant_spec(variant)
    full = {**vit_config(variant), **(config or {})}
    whole = int(full["num_layers"])
    blocks = whole if blocks is None else blocks
    if image_size % spec.patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the {variant} patch size "
                         f"{spec.patch}")
    if not 1 <= blocks <= whole:
        raise ValueError(f"blocks = {blocks}: a {variant_name(variant)} has 1 to {whole} "
                         "encoder blocks")
    base = vit_keras.build_model(
        image_size=image_size, patch_size=spec.patch, classes=num_classes, include_top=False,
        representation_size=representation_size, name=f"vit-{variant}",
        **{**full, "num_layers": blocks})
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="head")(base.output)
    model = keras.Model(base.input, outputs, name=f"vit_ft_{variant}")
    if weights_path is not None:
        check_fits(Path(weights_path), variant, {**full, "num_layers": blocks})
        load_npz_weights(model, Path(weights_path), image_size // spec.patch)
    return model


def file_shape(path: Path) -> dict[str, int]:
    """What an .npz checkpoint holds: patch, width, heads, mlp and depth (its encoder blocks);
    DataError when it is not a readable ViT checkpoint."""
    query = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"
    try:
        with np.load(path, allow_pickle=False) as params:
            embedding = params["embedding/kernel"].shape          # (patch, patch, 3, width)
            heads = params[query].shape[1]                          # (width, heads, head width)
            mlp = params["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape[1]
            depth = len({m.group(1) for key in params.files if (m := BLOCK_KEY.match(key))})
    except NPZ_ERRORS as exc:
        raise DataError(f"ViT weights file {path} is not a readable ViT checkpoint (.npz in the "
                        f"vit_jax layout): {type(exc).__name__}: {exc}") from exc
    return {"patch": int(embedding[0]), "width": int(embedding[-1]), "heads": int(heads),
            "mlp": int(mlp), "depth": depth}


def check_fits(path: Path, variant: str, config: dict[str, Any]) -> None:
    """WeightsFileError naming the file, each mismatch and the variant the file would fit,
    unless its patch, width, heads and MLP are the model's and it has at least its blocks."""
    if not path.is_file():
        raise DataError(f"ViT weights file {path} does not exist")
    got = file_shape(path)
    want = {"patch": patch_size(variant), "width": config["hidden_size"],
            "heads": config["num_heads"], "mlp": config["mlp_dim"]}
    wrong = [f"{key} {got[key]} (the model has {value})" for key, value in want.items()
             if got[key] != value]
    if got["depth"] < config["num_layers"]:
        wrong.append(f"{got['depth']} encoder blocks (the model has {config['num_layers']})")
    if wrong:
        shape = (got["patch"], got["width"], got["heads"], got["mlp"])
        fits = [name for name, v in VIT_VARIANTS.items() if (v.patch, *_widths(name)) == shape]
        hint = f"; it fits vit_ft.variant {' or '.join(fits)}" if fits else ""
        raise WeightsFileError(f"ViT weights file {path} does not fit vit_ft.variant {variant} "
                               f"({variant_name(variant)}): it has {', '.join(wrong)}{hint}")


def _widths(variant: str) -> tuple[int, int, int]:
    config = vit_config(variant)
    return config["hidden_size"], config["num_heads"], config["mlp_dim"]


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
    if weights.startswith(timm_weights.HUB_PREFIX):
        timm_weights.parse_hub_name(weights)  # a ConfigError unless hf-hub:<owner>/<model>[@rev]
        return
    if weights in KNOWN_WEIGHTS or re.match(r"^https?://", weights) \
            or Path(weights).expanduser().is_file():
        return
    raise ConfigError("vit_ft.weights", weights,
                      f"{' or '.join(KNOWN_WEIGHTS)}, {timm_weights.HUB_WEIGHTS_FORM}, an http(s) "
                      "URL, or an existing .npz or .safetensors file")


def resolve_vit_weights(weights: str, variant: str) -> Path:
    """Local path of the weights named by `vit_ft.weights`: a release name (imagenet21k,
    imagenet21k+imagenet2012: the variant's official file, `release_file`) or an http(s)
    URL -> downloaded into the Keras cache (`$KERAS_HOME/weights`, as vit-keras does) unless
    already there; else an existing local file."""
    from vitbench.models import cached_download

    if timm_weights.is_timm_weights(weights):  # hf-hub:<repo> or a .safetensors file or URL
        config = vit_config(variant)
        return timm_weights.converted_npz(weights, timm_weights.Dims(
            config["hidden_size"], config["num_heads"], config["mlp_dim"], patch_size(variant)))
    if weights in KNOWN_WEIGHTS:
        fname, url = release_file(variant, weights)
        return cached_download(fname, url, "weights")
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
