"""ViT weights in timm's layout (`.safetensors`), by name from the Hugging Face hub or as a file or
URL, converted to the vit_jax `.npz` layout that `pretrained_vit` loads.

`vit_ft.weights: hf-hub:timm/<model>[@revision]` downloads the repository's `model.safetensors`
and `config.json` with `huggingface_hub.hf_hub_download`, so its cache (`HF_HOME`,
`HF_HUB_CACHE`), `HF_HUB_OFFLINE=1`, `HF_ENDPOINT` and revisions (branch, tag or commit) work as
for any hub client. A local `.safetensors` file takes the `config.json` beside it when there is
one; an http(s) URL of one is downloaded into the Keras cache (`$KERAS_HOME/weights`).

The tensors are read with `safetensors.numpy` (no torch) and every one is checked against the
shape the model's variant needs (`to_vit_jax`); a missing, unknown or misshapen tensor is a
`WeightsFileError` naming it. The converted file is written once to
`$KERAS_HOME/weights/timm/<name>-<sha256 of the .safetensors>.npz`. `to_timm` is the inverse
(a vit_jax checkpoint as timm tensors), for users who want to publish a vitbench ViT to timm.

The checkpoint's `config.json` (`pretrained_cfg.mean/std`) gives the normalization `auto` picks
("tf" for mean = std = 0.5, "torch" for the ImageNet mean/std) and its `input_size` the image
size the position embeddings were trained at (checked against `pos_embed`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vitbench.core.download import NetworkError
from vitbench.core.errors import ConfigError, DataError, FetchError, short_list
from vitbench.models.weights import WeightsFileError, cached_download, keras_home, url_file_name

# `vit_ft.weights` naming timm weights on the Hugging Face hub
HUB_WEIGHTS = re.compile(r"^hf-hub:(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
HUB_WEIGHTS_FORM = ("hf-hub:<owner>/<model>[@revision], e.g. "
                    "hf-hub:timm/deit_tiny_patch16_224.fb_in1k")

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
SAFETENSORS = "model.safetensors"
CONFIG = "config.json"
# pretrained_cfg mean/std -> the vit_ft normalization (data.pipeline.PREPROCESS key) that matches
NORMALIZATIONS = {((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): "tf",
                  ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)): "torch"}
BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class HubName:
    """A parsed `hf-hub:<repo>[@revision]` setting."""

    repo: str
    revision: str | None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class Dims:
    """The widths a model's variant needs: hidden (embedding) width, heads, MLP width, patch."""

    hidden: int
    heads: int
    mlp: int
    patch: int


def is_timm_weights(weights: str) -> bool:
    """Whether `vit_ft.weights` names timm weights: a hub name, or a `.safetensors` file or URL."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(weights).path)
    return weights.startswith(HUB_PREFIX) or path.lower().endswith(".safetensors")


def parse_hub_name(weights: str) -> HubName:
    """The repository and revision of `hf-hub:<owner>/<model>[@revision]`, or a ConfigError."""
    match = HUB_WEIGHTS.match(weights.strip())
    if not match:
        raise ConfigError("vit_ft.weights", weights, HUB_WEIGHTS_FORM)
    return HubName(match["repo"], match["revision"])


# --- finding the files ---------------------------------------------------------------------------

def hub_file(name: HubName, filename: str, optional: bool = False) -> Path | None:
    """`filename` of a hub repository through the hub client's cache (downloaded unless cached;
    `HF_HUB_OFFLINE=1`: the cache only). NetworkError when the hub cannot be reached and the file
    is not cached; WeightsFileError when the hub answers that the repository, revision or file does
    not exist (an error even under `pretrained: auto`), except None for an `optional` file."""
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        return Path(hf_hub_download(name.repo, filename, revision=name.revision, endpoint=endpoint,
                                    local_files_only=not hub_resolves(endpoint)))
    except hub_errors.RemoteEntryNotFoundError as exc:
        if optional:
            log.info("%s has no %s", name, filename)
            return None
        raise WeightsFileError(f"vit_ft.weights {name}: the hub has no {filename} there "
                               f"({_first_line(exc)})") from exc
    except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError) as exc:
        raise WeightsFileError(f"vit_ft.weights {name}: no such repository or revision on the "
                               f"hub ({type(exc).__name__}: {_first_line(exc)})") from exc
    except hub_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and status < 500:
            raise WeightsFileError(f"vit_ft.weights {name}: the hub refused {filename} (HTTP "
                                   f"{status}: {_first_line(exc)})") from exc
        raise _unreachable(name, filename, exc) from exc
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled, OSError) as exc:
        raise _unreachable(name, filename, exc) from exc


def hub_resolves(endpoint: str | None) -> bool:
    """Whether the hub's host name resolves (or a proxy will resolve it for us). Without a network
    the hub client retries each file with back-off for about 20 s before it looks in its cache;
    when the name does not resolve vitbench goes to the cache at once."""
    from huggingface_hub import constants

    url = urllib.parse.urlsplit(endpoint or constants.ENDPOINT)
    host = url.hostname or ""
    proxies = urllib.request.getproxies()   # HTTPS_PROXY and friends: the proxy resolves names
    if (url.scheme in proxies or "all" in proxies) and not urllib.request.proxy_bypass_environment(host):
        return True
    return _host_resolves(host)


@functools.cache
def _host_resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        log.info("the hub's host %s does not resolve (%s): its cache only", host, exc)
        return False
    return True


def _unreachable(name: HubName, filename: str, exc: Exception) -> NetworkError:
    """The hub could not be reached and the file is not cached: what `pretrained: auto` may
    turn into random weights."""
    return NetworkError(
            f"vit_ft.weights {name}: {filename} is neither reachable nor in the hub cache "
            f"({type(exc).__name__}: {_first_line(exc)}); to work offline, download it once "
            f"online (`hf download {name.repo}{_revision_option(name)}`) and set "
            "HF_HUB_OFFLINE=1, or name a local .safetensors file")


def _revision_option(name: HubName) -> str:
    return f" --revision {name.revision}" if name.revision else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def locate(weights: str) -> tuple[Path, dict[str, Any] | None, str]:
    """(the .safetensors file, its config.json or None, a name for the converted file) of a
    timm `vit_ft.weights` setting: a hub name, an http(s) URL or a local file."""
    if weights.startswith(HUB_PREFIX):
        name = parse_hub_name(weights)
        path = hub_file(name, SAFETENSORS)
        assert path is not None
        return path, hub_config(name), name.repo.split("/")[-1]
    if re.match(r"^https?://", weights):
        path = cached_download(url_file_name(weights), weights, "weights")
        return path, None, PurePosixPath(urllib.parse.urlsplit(weights).path).stem
    path = Path(weights).expanduser()
    if not path.is_file():
        raise DataError(f"vit_ft.weights: {weights} is not an existing .safetensors file")
    config = read_config(path.parent / CONFIG) if (path.parent / CONFIG).is_file() else None
    return path, config, str((config or {}).get("architecture") or path.stem)


def hub_config(name: HubName) -> dict[str, Any] | None:
    """The repository's config.json, or None when it has none or (offline) it is not cached."""
    try:
        path = hub_file(name, CONFIG, optional=True)
    except FetchError as exc:
        log.warning("%s; normalization and input size are not known from it", exc)
        return None
    return read_config(path) if path is not None else None


def read_config(path: Path) -> dict[str, Any]:
    """A timm config.json, or a WeightsFileError naming the file."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFileError(f"{path} is not a readable config.json: {exc}") from exc
    if not isinstance(config, dict):
        raise WeightsFileError(f"{path} is not a config.json object")
    return config


# --- what the config says ------------------------------------------------------------------------

def config_normalization(config: Mapping[str, Any], source: str) -> str | None:
    """"tf" or "torch" from `pretrained_cfg.mean/std` (or top-level mean/std), None when absent;
    a WeightsFileError for a mean/std neither normalization reproduces."""
    cfg = config.get("pretrained_cfg") or config
    if "mean" not in cfg or "std" not in cfg:
        return None
    try:
        key = (tuple(round(float(v), 3) for v in cfg["mean"]),
               tuple(round(float(v), 3) for v in cfg["std"]))
    except (TypeError, ValueError) as exc:
        raise WeightsFileError(f"{source}: config.json mean/std are not numbers: {exc}") from exc
    if key not in NORMALIZATIONS:
        raise WeightsFileError(
            f"{source}: config.json asks for mean {list(key[0])} and std {list(key[1])}; "
            "vitbench normalizes with mean = std = 0.5 (vit_ft.normalize: tf) or the ImageNet "
            "mean/std (torch): set vit_ft.normalize to the closer one to use these weights")
    return NORMALIZATIONS[key]


def normalization(weights: str) -> str | None:
    """The normalization a timm setting's config.json asks for; None when it has no config or
    (a hub name) neither the hub nor its cache has it."""
    if weights.startswith(HUB_PREFIX):
        config = hub_config(parse_hub_name(weights))
    elif re.match(r"^https?://", weights):
        return None
    else:
        beside = Path(weights).expanduser().parent / CONFIG
        config = read_config(beside) if beside.is_file() else None
    return config_normalization(config, weights) if config else None


def config_input_size(config: Mapping[str, Any] | None) -> int | None:
    """The square image size `pretrained_cfg.input_size` ([3, H, W]) gives, else None."""
    cfg = (config or {}).get("pretrained_cfg") or config or {}
    size = cfg.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 3 and size[1] == size[2]:
        return int(size[1])
    return None


# --- the mapping ---------------------------------------------------------------------------------

def expected_shapes(tensors: Mapping[str, Any], dims: Dims,
                    input_size: int | None = None) -> dict[str, tuple[int, ...]]:
    """The shape each tensor of a timm ViT with `dims` must have (its blocks, head and
    pre_logits as many as `tensors` has); `pos_embed` fits `input_size` when given."""
    h, m, p = dims.hidden, dims.mlp, dims.patch
    grid = (input_size // p) ** 2 if input_size else _pos_tokens(tensors) - 1
    want: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, h), "pos_embed": (1, grid + 1, h),
        "patch_embed.proj.weight": (h, 3, p, p), "patch_embed.proj.bias": (h,),
        "norm.weight": (h,), "norm.bias": (h,)}
    for i in range(_depth(tensors)):
        for part, shape in (("norm1.weight", (h,)), ("norm1.bias", (h,)),
                            ("attn.qkv.weight", (3 * h, h)), ("attn.qkv.bias", (3 * h,)),
                            ("attn.proj.weight", (h, h)), ("attn.proj.bias", (h,)),
                            ("norm2.weight", (h,)), ("norm2.bias", (h,)),
                            ("mlp.fc1.weight", (m, h)), ("mlp.fc1.bias", (m,)),
                            ("mlp.fc2.weight", (h, m)), ("mlp.fc2.bias", (h,))):
            want[f"blocks.{i}.{part}"] = shape
    for layer in ("pre_logits.fc", "head"):  # optional: their output width is the file's own
        if f"{layer}.weight" in tensors:
            out = tuple(tensors[f"{layer}.weight"].shape)[0]
            want |= {f"{layer}.weight": (out, h), f"{layer}.bias": (out,)}
    return want


def _depth(tensors: Mapping[str, Any]) -> int:
    numbers = {int(m.group(1)) for key in tensors if (m := BLOCK.match(key))}
    return max(numbers) + 1 if numbers else 0


def _pos_tokens(tensors: Mapping[str, Any]) -> int:
    shape = tuple(tensors["pos_embed"].shape) if "pos_embed" in tensors else ()
    tokens = shape[1] if len(shape) == 3 else 1
    return tokens if math.isqrt(tokens - 1) ** 2 == tokens - 1 else 1  # else: reported as wrong


def check_shapes(tensors: Mapping[str, Any], dims: Dims, source: str,
                 input_size: int | None = None) -> None:
    """WeightsFileError naming every missing, unknown or misshapen tensor (expected and found)
    and the widths the file holds, unless the file is a timm ViT with `dims`."""
    want = expected_shapes(tensors, dims, input_size)
    wrong = [f"{key} {tuple(tensors[key].shape)} (expected {shape})" for key, shape in want.items()
             if key in tensors and tuple(tensors[key].shape) != shape]
    missing = [key for key in want if key not in tensors]
    unknown = [key for key in tensors if key not in want]
    problems = [f"misshapen tensors: {short_list(wrong, 5)}" if wrong else "",
                f"missing tensors: {short_list(missing, 5)}" if missing else "",
                f"tensors a vit-keras ViT has no place for: {short_list(unknown, 5)}"
                if unknown else ""]
    if any(problems):
        raise WeightsFileError(f"ViT weights {source} do not fit the model ({_holds(tensors)}; the "
                               f"model needs width {dims.hidden}, MLP {dims.mlp}, patch "
                               f"{dims.patch}): {'; '.join(p for p in problems if p)}")


def _holds(tensors: Mapping[str, Any]) -> str:
    """What a timm file holds, as far as its patch embedding and first MLP say."""
    conv = tuple(tensors["patch_embed.proj.weight"].shape) if "patch_embed.proj.weight" in tensors \
        else ()
    fc1 = tuple(tensors["blocks.0.mlp.fc1.weight"].shape) if "blocks.0.mlp.fc1.weight" in tensors \
        else ()
    if len(conv) != 4 or len(fc1) != 2:
        return "not a timm ViT"
    return f"the file holds width {conv[0]}, MLP {fc1[0]}, patch {conv[-1]}, {_depth(tensors)} blocks"


# Tensors that map one to one: timm name -> (vit_jax name, layout change). "linear": a torch
# Linear weight (out, in) <-> a Keras kernel (in, out); "conv": (out, in, kh, kw) <-> (kh, kw, in,
# out). The qkv and proj weights of attention also depend on the heads (`to_vit_jax`, `to_timm`).
TOP = {"cls_token": ("cls", ""), "pos_embed": ("Transformer/posembed_input/pos_embedding", ""),
       "patch_embed.proj.weight": ("embedding/kernel", "conv"),
       "patch_embed.proj.bias": ("embedding/bias", ""),
       "norm.weight": ("Transformer/encoder_norm/scale", ""),
       "norm.bias": ("Transformer/encoder_norm/bias", ""),
       "head.weight": ("head/kernel", "linear"), "head.bias": ("head/bias", ""),
       "pre_logits.fc.weight": ("pre_logits/kernel", "linear"),
       "pre_logits.fc.bias": ("pre_logits/bias", "")}
IN_BLOCK = {"norm1.weight": ("LayerNorm_0/scale", ""), "norm1.bias": ("LayerNorm_0/bias", ""),
            "norm2.weight": ("LayerNorm_2/scale", ""), "norm2.bias": ("LayerNorm_2/bias", ""),
            "attn.proj.bias": ("MultiHeadDotProductAttention_1/out/bias", ""),
            "mlp.fc1.weight": ("MlpBlock_3/Dense_0/kernel", "linear"),
            "mlp.fc1.bias": ("MlpBlock_3/Dense_0/bias", ""),
            "mlp.fc2.weight": ("MlpBlock_3/Dense_1/kernel", "linear"),
            "mlp.fc2.bias": ("MlpBlock_3/Dense_1/bias", "")}
ATTENTION = "MultiHeadDotProductAttention_1/"
QKV = ("query", "key", "value")
TO_JAX = {"": lambda a: a, "linear": lambda a: a.T, "conv": lambda a: a.transpose(2, 3, 1, 0)}
TO_TIMM = {"": lambda a: a, "linear": lambda a: a.T, "conv": lambda a: a.transpose(3, 2, 0, 1)}


def _renames(depth: int) -> list[tuple[str, str, str]]:
    """(timm name, vit_jax name, layout change) of every one-to-one tensor of `depth` blocks."""
    pairs = [(timm, jax, kind) for timm, (jax, kind) in TOP.items()]
    for i in range(depth):
        pairs += [(f"blocks.{i}.{timm}", f"Transformer/encoderblock_{i}/{jax}", kind)
                  for timm, (jax, kind) in IN_BLOCK.items()]
    return pairs


def to_vit_jax(tensors: Mapping[str, np.ndarray], dims: Dims, source: str,
               input_size: int | None = None) -> dict[str, np.ndarray]:
    """A timm ViT state dict as a vit_jax checkpoint (the keys vit_keras.utils.load_weights_numpy
    reads), after `check_shapes`. The qkv Linear splits into query/key/value kernels of
    (hidden, heads, head width); the output projection becomes (heads, head width, hidden)."""
    check_shapes(tensors, dims, source, input_size)
    h, heads, depth = dims.hidden, dims.heads, _depth(tensors)
    t = {key: np.asarray(value, dtype=np.float32) for key, value in tensors.items()}
    out = {jax: np.ascontiguousarray(TO_JAX[kind](t[timm]))
           for timm, jax, kind in _renames(depth) if timm in t}
    for i in range(depth):
        src, attn = f"blocks.{i}.attn.", f"Transformer/encoderblock_{i}/{ATTENTION}"
        qkv = t[f"{src}qkv.weight"].T.reshape(h, 3, heads, h // heads)
        qkv_bias = t[f"{src}qkv.bias"].reshape(3, heads, h // heads)
        for n, part in enumerate(QKV):
            out[f"{attn}{part}/kernel"] = np.ascontiguousarray(qkv[:, n])
            out[f"{attn}{part}/bias"] = qkv_bias[n]
        out[f"{attn}out/kernel"] = np.ascontiguousarray(
            t[f"{src}proj.weight"].T.reshape(heads, h // heads, h))
    return out


def to_timm(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of `to_vit_jax`: a vit_jax checkpoint (as np.load gives it) as the state dict
    of the timm ViT with the same widths (heads from the query kernel's shape)."""
    p = {key: np.asarray(params[key], dtype=np.float32) for key in params}
    depth = len({m.group(1) for key in p if (m := re.match(r"^Transformer/encoderblock_(\d+)/", key))})
    out = {timm: np.ascontiguousarray(TO_TIMM[kind](p[jax]))
           for timm, jax, kind in _renames(depth) if jax in p}
    for i in range(depth):
        dst, attn = f"blocks.{i}.attn.", f"Transformer/encoderblock_{i}/{ATTENTION}"
        h = p[f"{attn}query/kernel"].shape[0]
        kernels = np.stack([p[f"{attn}{part}/kernel"] for part in QKV], axis=1).reshape(h, 3 * h)
        out[f"{dst}qkv.weight"] = np.ascontiguousarray(kernels.T)
        out[f"{dst}qkv.bias"] = np.concatenate([p[f"{attn}{part}/bias"].reshape(-1) for part in QKV])
        out[f"{dst}proj.weight"] = np.ascontiguousarray(p[f"{attn}out/kernel"].reshape(h, h).T)
    return out


# --- reading, converting, caching ----------------------------------------------------------------

def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as NumPy arrays; WeightsFileError naming the file when
    it is not one (or holds a dtype NumPy lacks, such as bfloat16)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, TypeError, ValueError) as exc:
        raise WeightsFileError(f"ViT weights file {path} is not a readable .safetensors file "
                               f"(float32 or float16 tensors): {type(exc).__name__}: {exc}") from exc


def converted_npz(weights: str, dims: Dims) -> Path:
    """The vit_jax .npz of a timm `vit_ft.weights` setting (hub name, URL or .safetensors file)
    for a model with `dims`, every tensor checked: converted once into
    `$KERAS_HOME/weights/timm/`, then reused."""
    path, config, name = locate(weights)
    input_size = config_input_size(config)
    params = to_vit_jax(read_safetensors(path), dims, f"{weights} ({path})", input_size)
    if input_size:
        log.info("%s: trained at %d px (%d x %d patches of %d)", weights, input_size,
                 input_size // dims.patch, input_size // dims.patch, dims.patch)
    target = keras_home() / "weights" / "timm" / f"{name}-{_sha256(path)[:12]}-{dims.heads}h.npz"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **params)
    os.replace(tmp.name, target)
    log.info("converted %s (timm layout) to %s", weights, target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_timm(params: Mapping[str, np.ndarray], path: Path,
              config: Mapping[str, Any] | None = None) -> Path:
    """Write a vit_jax checkpoint as a timm `model.safetensors` (and `config.json` beside it
    when `config` is given)."""
    from safetensors.numpy import save_file

    save_file(to_timm(params), str(path))
    if config is not None:
        (path.parent / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path
