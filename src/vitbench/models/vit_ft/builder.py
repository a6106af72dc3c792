"""The pretrained Vision Transformer: a vit-keras ViT (Ti, S, B or L; patch 16 or 32) under a new
softmax head.

`build_vit_ft` returns ONE flat functional model: the vit-keras layers (embedding, class token,
position embedding, `Transformer_encoderblock_<n>` blocks, encoder norm, optional `pre_logits`) at
top level, then a Dense softmax "head" (float32). So `vit_keras.visualize.attention_map` and
`vit_keras.utils.load_weights_numpy` work on it unchanged.

`vitbench.models.vit_ft.variants.VIT_VARIANTS` is the one table of what each `vit_ft.variant` is (patch size,
depth, where its official ImageNet weights are published, the widths of Ti and S); `vit_config`
adds vit-keras' CONFIG_B and CONFIG_L for B and L when a model is built. Weights are Flax checkpoints
as .npz files (vit-keras' release files for B and L, the AugReg files of Steiner et al. 2021,
"How to train your ViT", for Ti and S, or any local file or URL with the same keys, such as a
DeiT checkpoint in that layout), resolved by `resolve_vit_weights` through the Keras cache
(`$KERAS_HOME/weights`). Before anything is loaded every tensor of the file is read in full and
checked against the variant: its key set and each array's shape (`checkpoint_layout`), finite
floating-point values. A file that does not fit (another width, heads, MLP, patch or depth; a
missing, extra or reshaped tensor; truncated or not an .npz at all) is a `WeightsFileError` naming
the file and what is wrong (the tensor, the shape expected and the one found; the variant it would
fit), whatever `pretrained` says.

Normalization belongs to the weights (`vit_ft.normalize: auto | tf | torch`, `normalization`):
Google's checkpoints (vit-keras' and AugReg) expect inputs in [-1, 1] ("tf"); DeiT expects the
ImageNet mean/std ("torch"). `auto` takes what a timm checkpoint's config.json asks for (when
the weights are to be loaded), else "torch" for weights whose name contains "deit" (any case)
and "tf" for everything else, and logs the choice; the record's
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
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import keras
import numpy as np
from vit_keras import layers as vit_layers
from vit_keras import utils as vit_utils
from vit_keras import vit as vit_keras

from vitbench.core.errors import ConfigError, short_list
from vitbench.models.family import block_outputs
from vitbench.models.vit_ft import timm_weights
from vitbench.models.vit_ft.variants import RELEASE_WEIGHTS, VIT_VARIANTS, variant_spec
from vitbench.models.weights import WeightsFileError, pretrained_mode

log = logging.getLogger(__name__)

AUGREG_URL = "https://storage.googleapis.com/vit_models/augreg"
AUGREG_IN1K = "--imagenet2012-steps_20k-lr_0.03-res_224"  # the ImageNet-1k fine-tuned AugReg files


def vit_config(variant: str) -> dict[str, Any]:
    """The vit_keras.vit.build_model arguments of a variant (as vit_keras.vit.CONFIG_B): vit-keras'
    own CONFIG_B or CONFIG_L, read now (so a test that shrinks it sees its change), else the
    width, heads, MLP and dropout of `variants.VIT_VARIANTS`."""
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
NORMALIZE = ("auto", "tf", "torch")       # vit_ft.normalize; tf and torch are PREPROCESS keys
PRE_LOGITS_KEY = "pre_logits/kernel"
# What np.load and vit-keras raise for a file that is not (or does not fit) a ViT checkpoint.
NPZ_ERRORS = (KeyError, ValueError, AssertionError, OSError, EOFError, zipfile.BadZipFile,
              zlib.error, pickle.UnpicklingError)
POSEMBED_KEY = "Transformer/posembed_input/pos_embedding"   # its token count is resized on load


def patch_size(variant: str) -> int:
    """Patch size of a variant, or a ConfigError naming the allowed ones."""
    return variant_spec(variant).patch


def lineage(weights: str | None) -> str:
    """"DeiT" when the weights file or URL's name contains "deit" (any case), else "ViT"."""
    if not weights or weights in RELEASE_WEIGHTS:
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
    timm = None   # what the checkpoint's config.json asks for, when the weights will be loaded
    if timm_weights.is_timm_weights(cfg.weights) and pretrained_mode(cfg.pretrained) != "false":
        timm = timm_weights.normalization(cfg.weights)
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


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every array of an .npz checkpoint, each read in full (so a truncated or
    corrupt file fails here, before anything is loaded); WeightsFileError naming the file, or the
    array, when it is not a readable .npz of finite floating-point arrays."""
    require_npz(path)
    shapes = {}
    try:
        with np.load(path, allow_pickle=False) as params:
            for key in params.files:
                array = params[key]
                if not np.issubdtype(array.dtype, np.floating):
                    raise WeightsFileError(f"ViT weights file {path}: tensor {key} holds "
                                           f"{array.dtype} values, not floating-point weights")
                if not np.isfinite(array).all():
                    raise WeightsFileError(f"ViT weights file {path}: tensor {key} holds NaN or "
                                           "infinite values")
                shapes[key] = tuple(int(n) for n in array.shape)
    except NPZ_ERRORS as exc:
        raise WeightsFileError(f"ViT weights file {path} is not a readable .npz checkpoint "
                               f"(damaged?): {type(exc).__name__}: {exc}") from exc
    return shapes


def require_npz(path: Path) -> None:
    """WeightsFileError unless `path` is a whole .npz (zip) file; it names what it is instead."""
    if not path.is_file():
        raise WeightsFileError(f"ViT weights file {path} does not exist")
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as fh:
        start = fh.read(8)
    kind = ("an HDF5 file (Keras .h5 weights belong in cnn.weights)" if start.startswith(b"\x89HDF")
            else "a single .npy array" if start.startswith(b"\x93NUMPY")
            else "an .npz cut short (truncated)" if start.startswith(b"PK")
            else "neither an .npz nor any known weights format")
    raise WeightsFileError(f"ViT weights file {path} is not a readable .npz checkpoint (the "
                           f"vit_jax layout): it is {kind}")


def checkpoint_layout(patch: int, config: dict[str, Any], depth: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor that a vit_jax checkpoint of this architecture with `depth`
    encoder blocks holds, apart from those whose size is the file's own choice: the position
    embedding (resized on load), `pre_logits` and the ImageNet head (see `_free_tensors`)."""
    width, heads, mlp = config["hidden_size"], config["num_heads"], config["mlp_dim"]
    head_width = width // heads
    layout = {"cls": (1, 1, width), "embedding/kernel": (patch, patch, 3, width),
              "embedding/bias": (width,), "Transformer/encoder_norm/scale": (width,),
              "Transformer/encoder_norm/bias": (width,)}
    per_block = {"LayerNorm_0/scale": (width,), "LayerNorm_0/bias": (width,),
                 "LayerNorm_2/scale": (width,), "LayerNorm_2/bias": (width,),
                 "MlpBlock_3/Dense_0/kernel": (width, mlp), "MlpBlock_3/Dense_0/bias": (mlp,),
                 "MlpBlock_3/Dense_1/kernel": (mlp, width), "MlpBlock_3/Dense_1/bias": (width,),
                 "MultiHeadDotProductAttention_1/out/kernel": (heads, head_width, width),
                 "MultiHeadDotProductAttention_1/out/bias": (width,)}
    for name in ("query", "key", "value"):
        per_block[f"MultiHeadDotProductAttention_1/{name}/kernel"] = (width, heads, head_width)
        per_block[f"MultiHeadDotProductAttention_1/{name}/bias"] = (heads, head_width)
    for n in range(depth):
        layout.update({f"Transformer/encoderblock_{n}/{key}": shape
                       for key, shape in per_block.items()})
    return layout


def _free_tensors(shapes: dict[str, tuple[int, ...]], width: int) -> dict[str, str | None]:
    """The tensors whose size the file chooses: key -> what is wrong with its shape, or None.
    The position embedding is (1, 1 + n*n, width); `pre_logits` (width, r) and (r,); the head,
    which is not loaded, (width or r, classes) and (classes,)."""
    pos = shapes.get(POSEMBED_KEY)
    grid = round((pos[1] - 1) ** 0.5) if pos is not None and len(pos) == 3 and pos[1] > 1 else 0
    checks = {POSEMBED_KEY: pos is not None and len(pos) == 3 and pos[0] == 1
              and pos[2] == width and grid * grid == pos[1] - 1}
    pre = shapes.get(PRE_LOGITS_KEY)
    if pre is not None or "pre_logits/bias" in shapes:
        checks[PRE_LOGITS_KEY] = pre is not None and len(pre) == 2 and pre[0] == width
        checks["pre_logits/bias"] = pre is not None and shapes.get("pre_logits/bias") == pre[-1:]
    head, into = shapes.get("head/kernel"), (pre[-1] if pre else width)
    if head is not None or "head/bias" in shapes:
        checks["head/kernel"] = head is not None and len(head) == 2 and head[0] == into
        checks["head/bias"] = head is not None and shapes.get("head/bias") == head[-1:]
    expected = {POSEMBED_KEY: f"(1, 1 + n*n, {width})", PRE_LOGITS_KEY: f"({width}, r)",
                "pre_logits/bias": "(r,) as pre_logits/kernel", "head/kernel": f"({into}, classes)",
                "head/bias": "(classes,) as head/kernel"}
    return {key: None if ok else expected[key] for key, ok in checks.items()}


def _architecture(shapes: dict[str, tuple[int, ...]]) -> dict[str, int] | None:
    """Patch, width, heads, mlp and depth of a checkpoint, or None without the keys that say."""
    query = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"
    mlp = "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"
    embedding = shapes.get("embedding/kernel")
    if embedding is None or len(embedding) != 4 or len(shapes.get(query, ())) != 3 \
            or len(shapes.get(mlp, ())) != 2:
        return None
    return {"patch": embedding[0], "width": embedding[-1], "heads": shapes[query][1],
            "mlp": shapes[mlp][1], "depth": _depth(shapes)}


def _depth(shapes: dict[str, tuple[int, ...]]) -> int:
    return len({m.group(1) for key in shapes if (m := BLOCK_KEY.match(key))})


def check_fits(path: Path, variant: str, config: dict[str, Any]) -> None:
    """Read every tensor of `path` and check it against the model (`config`: its
    vit_keras.vit.build_model arguments; the file may have more encoder blocks than it). A
    WeightsFileError names the file and each mismatch: the variant it would fit when its patch,
    width, heads or MLP differ, else each missing, extra or misshapen tensor."""
    shapes = checkpoint_shapes(path)
    what = f"ViT weights file {path} does not fit vit_ft.variant {variant} ({variant_name(variant)})"
    if (got := _architecture(shapes)) is not None:
        _check_architecture(got, variant, config, what)
    layout = checkpoint_layout(patch_size(variant), config,
                               max(_depth(shapes), config["num_layers"]))
    free = _free_tensors(shapes, config["hidden_size"])
    problems = [f"tensor {key} has shape {shapes[key]}, expected {layout[key]}"
                for key in layout if key in shapes and shapes[key] != layout[key]]
    problems += [f"tensor {key} has shape {shapes.get(key, 'none')}, expected {expected}"
                 for key, expected in free.items() if expected is not None]
    missing = [key for key in layout if key not in shapes]
    extra = [key for key in shapes if key not in layout and key not in free]
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing: {short_list(missing, 5)}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s): {short_list(extra, 5)}")
    if problems:
        raise WeightsFileError(f"{what}: {short_list(problems, 5, sep='; ')}")


def _check_architecture(got: dict[str, int], variant: str, config: dict[str, Any],
                        what: str) -> None:
    """WeightsFileError (`what`: the file and variant) naming each of patch, width, heads and MLP
    that differs and the variant the file would fit, or too few encoder blocks."""
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
        raise WeightsFileError(f"{what}: it has {', '.join(wrong)}{hint}")


def _widths(variant: str) -> tuple[int, int, int]:
    config = vit_config(variant)
    return config["hidden_size"], config["num_heads"], config["mlp_dim"]


def load_npz_weights(model: keras.Model, path: Path, patches_per_side: int) -> None:
    """Load a vit-keras/Flax .npz into every layer but the head (position embeddings resized to
    the model's patch grid; a model with fewer encoder blocks takes the file's first ones);
    WeightsFileError when the file does not fit the model (`check_fits` says why first)."""
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
        raise WeightsFileError(f"ViT weights file {path} does not fit {model.name}: "
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
    require_npz(Path(weights_file))
    try:
        with np.load(weights_file, allow_pickle=False) as params:
            if PRE_LOGITS_KEY in params.files:
                return int(params[PRE_LOGITS_KEY].shape[-1])
    except NPZ_ERRORS as exc:
        raise WeightsFileError(f"ViT weights file {weights_file} is not a readable .npz: "
                               f"{type(exc).__name__}: {exc}") from exc
    return None


def check_weights_setting(weights: str) -> None:
    """ConfigError unless `vit_ft.weights` is a release name, an http(s) URL or an existing file
    (checked where the weights are used, not when params.yaml is read)."""
    if weights.startswith(timm_weights.HUB_PREFIX):
        timm_weights.parse_hub_name(weights)  # a ConfigError unless hf-hub:<owner>/<model>[@rev]
        return
    if weights in RELEASE_WEIGHTS or re.match(r"^https?://", weights) \
            or Path(weights).expanduser().is_file():
        return
    raise ConfigError("vit_ft.weights", weights,
                      f"{' or '.join(RELEASE_WEIGHTS)}, {timm_weights.HUB_WEIGHTS_FORM}, an "
                      "http(s) URL, or an existing .npz or .safetensors file")


def resolve_vit_weights(weights: str, variant: str) -> Path:
    """Local path of the weights named by `vit_ft.weights`: a release name (imagenet21k,
    imagenet21k+imagenet2012: the variant's official file, `release_file`) or an http(s)
    URL -> downloaded into the Keras cache (`$KERAS_HOME/weights`, as vit-keras does) unless
    already there; else an existing local file."""
    from vitbench.models.weights import cached_download

    if timm_weights.is_timm_weights(weights):  # hf-hub:<repo> or a .safetensors file or URL
        config = vit_config(variant)
        return timm_weights.converted_npz(weights, timm_weights.Dims(
            config["hidden_size"], config["num_heads"], config["mlp_dim"], patch_size(variant)))
    if weights in RELEASE_WEIGHTS:
        fname, url = release_file(variant, weights)
        return cached_download(fname, url, "weights")
    if re.match(r"^https?://", weights):
        fname = Path(urllib.parse.unquote(urllib.parse.urlsplit(weights).path)).name
        if not fname:
            raise ConfigError("vit_ft.weights", weights, "a URL that ends in a file name")
        return cached_download(fname, weights, "weights")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsFileError(f"vit_ft.weights: {weights} is neither "
                               f"{' nor '.join(RELEASE_WEIGHTS)}, an http(s) URL, nor an existing file")
    return path


def attention_weights(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """One array [batch, heads, tokens, tokens] per vit-keras TransformerBlock (output [1])."""
    blocks = [layer for layer in model.layers if isinstance(layer, vit_layers.TransformerBlock)]
    return block_outputs(model, [block.output[1] for block in blocks], x)
