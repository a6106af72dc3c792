"""The typed params.yaml: one pydantic dataclass per section, loaded and validated once.

params.yaml is the only source of values: no field here has a default, so a key missing from the
file is an error that names it, and code that builds params without a file of its own (tests,
benchmarks) starts from this source tree's params.yaml (`params_with`). Types are strict (no
"5" for 5, no 1 for true), unknown keys are refused, floats are finite, ranges are `Field`
constraints and cross-field rules `model_validator`s. `load_params()` raises `ConfigError` naming
the key, the value and what is allowed (`vitbench.core.config.errors`) before a stage touches an output.
The strict types are in `vitbench.core.config.types`, the data sections in `vitbench.core.config.data`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError
from pydantic import model_validator as check

from vitbench.core.config.data import (  # noqa: F401 (re-exported: config.Split etc.)
    ARCHIVE_SUFFIXES, Augment, AugmentOnline, Clean, Dataset, Split, Synthetic)
from vitbench.core.config.errors import config_error, reject
from vitbench.core.config.types import (
    HEX64, Bool, CacheMode, Epochs, Float, Fraction, Int, Pretrained, Str, section)
from vitbench.core.errors import ConfigError
from vitbench.core.model_ids import (  # noqa: F401 (MODEL_IDS re-exported)
    CNN_ARCHS, HUB_WEIGHTS, HUB_WEIGHTS_FORM, MODEL_IDS, VIT_VARIANTS)

PARAMS_FILE = "params.yaml"
SOURCE_PARAMS = Path(__file__).resolve().parents[4] / PARAMS_FILE  # this source tree's params.yaml
VIT_FT_WEIGHTS = ("imagenet21k", "imagenet21k+imagenet2012")


@section
class Train:
    epochs: Annotated[Int, Field(ge=1)]
    batch_size: Annotated[Int, Field(ge=1, le=4096)]
    patience: Annotated[Int, Field(ge=0)]
    min_steps: Union[Annotated[Int, Field(ge=1)], None]  # optimizer steps a phase runs at least
    mixed_precision: Pretrained
    deterministic: Bool     # TensorFlow op determinism: one seed, the same metrics
    cache: CacheMode

    def for_stage(self, section: Any) -> Train:
        """This Train with `epochs` replaced by the stage section's own `epochs` when set (the
        per-stage budget of cnn, vit, vit_ft); `train.epochs` otherwise."""
        own = getattr(section, "epochs", None)
        return self if own is None else dataclasses.replace(self, epochs=own)


@section
class LearningRate:
    """One training phase's recipe: peak learning rate, decoupled weight decay (0 = Adam, else
    AdamW), warm-up fraction (0 = constant lr, else linear warm-up then cosine to 0) and label
    smoothing of the cross-entropy."""

    lr: Annotated[Float, Field(gt=0.0, le=1.0)]
    weight_decay: Annotated[Float, Field(ge=0.0, le=1.0)]
    warmup: Fraction
    label_smoothing: Fraction


@section
class Cnn:
    arch: Annotated[Literal[CNN_ARCHS], Field(description=f"one of {', '.join(CNN_ARCHS)}")]
    image_size: Annotated[Int, Field(ge=32, le=1024)]
    pretrained: Pretrained
    dropout: Fraction
    weights: Str
    weights_sha256: Union[Str, None]
    feature_cache: Bool
    transfer: LearningRate
    finetune: LearningRate
    epochs: Epochs          # each phase's epochs; null = train.epochs

    @check(mode="after")
    def _check(self) -> Cnn:
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


@section
class Vit:
    image_size: Annotated[Int, Field(ge=8, le=1024)]
    patch_size: Annotated[Int, Field(ge=1)]
    projection_dim: Annotated[Int, Field(ge=1)]
    num_heads: Annotated[Int, Field(ge=1)]
    layers: Annotated[Int, Field(ge=1)]
    mlp_head: tuple[Annotated[Int, Field(ge=1)], ...]
    dropout: Fraction
    lr: Annotated[Float, Field(gt=0.0, le=1.0)]
    weight_decay: Annotated[Float, Field(ge=0.0, le=1.0)]
    spt: Bool
    lsa: Bool
    warmup: Fraction
    label_smoothing: Fraction
    drop_path: Fraction
    tokenizer: Annotated[Literal["patch", "conv"], Field(description="one of patch, conv")]
    seq_pool: Bool
    epochs: Epochs          # this stage's epochs; null = train.epochs

    @property
    def recipe(self) -> LearningRate:
        """lr, weight_decay, warmup and label_smoothing as one phase's recipe."""
        return LearningRate(self.lr, self.weight_decay, self.warmup, self.label_smoothing)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @check(mode="after")
    def _check(self) -> Vit:
        size, patch, conv = self.image_size, self.patch_size, self.tokenizer == "conv"
        if patch > size:
            reject("vit.patch_size", patch, f"an integer >= 1 and <= {size}")
        if size % patch:
            divisors = ", ".join([str(d) for d in range(2, size) if size % d == 0][:6])
            reject("vit.patch_size", patch, f"a divisor of vit.image_size ({size}), e.g. {divisors}")
        if self.projection_dim % self.num_heads:
            reject("vit.num_heads", self.num_heads,
                   f"a divisor of vit.projection_dim ({self.projection_dim})")
        if not self.mlp_head:  # the head needs a width to hand to the classifier
            reject("vit.mlp_head", list(self.mlp_head), "a list of one or more widths >= 1, "
                   "e.g. [128]")
        if conv and self.spt:
            reject("vit.spt", self.spt, "false when vit.tokenizer is conv (SPT is a patch tokenizer)")
        if conv and (patch < 2 or patch & (patch - 1)):
            reject("vit.patch_size", patch, "a power of two >= 2 when vit.tokenizer is conv (the "
                   "token stride: log2(patch_size) conv + pool/2 stages), e.g. 4, 8, 16")
        return self


@section
class VitFt:
    variant: Annotated[Literal[tuple(VIT_VARIANTS)],
                       Field(description=f"one of {', '.join(VIT_VARIANTS)}")]
    image_size: Annotated[Int, Field(le=1024)]
    pretrained: Pretrained
    weights: Str
    blocks: Union[Annotated[Int, Field(ge=1)], None]  # keep the first N of the variant's blocks; None: all
    normalize: Annotated[Literal["auto", "tf", "torch"], Field(description="auto | tf | torch")]
    feature_cache: Bool
    transfer: LearningRate
    finetune: LearningRate
    epochs: Epochs          # each phase's epochs; null = train.epochs

    @property
    def patch_size(self) -> int:
        return VIT_VARIANTS[self.variant].patch

    @check(mode="after")
    def _check(self) -> VitFt:
        patch, depth = self.patch_size, VIT_VARIANTS[self.variant].depth
        if self.image_size < patch:
            reject("vit_ft.image_size", self.image_size, f"an integer >= {patch} and <= 1024")
        if self.blocks is not None and self.blocks > depth:
            reject("vit_ft.blocks", self.blocks, f"an integer >= 1 and <= {depth}")
        if self.image_size % patch:
            reject("vit_ft.image_size", self.image_size, f"a multiple of the {self.variant} patch "
                   f"size ({patch}), e.g. {patch * 2}, {patch * 7}")
        hub = self.weights.startswith("hf-hub:")  # a hub name must be well-formed
        if not self.weights.strip() or (hub and not HUB_WEIGHTS.match(self.weights)):
            reject("vit_ft.weights", self.weights,  # a local file's existence: checked where used
                   f"{' or '.join(VIT_FT_WEIGHTS)}, {HUB_WEIGHTS_FORM}, an http(s) URL, or a "
                   "timm .safetensors or .npz file path")
        return self


@section
class Evaluate:
    batch_size: Annotated[Int, Field(ge=1, le=4096)]
    attention_samples: Annotated[Int, Field(ge=0, le=64)]
    robustness: Bool        # accuracy under 5 corruptions x 3 severities


@section
class Compare:
    samples: Annotated[Int, Field(ge=1, le=100)]


@section
class Params:
    seed: Annotated[Int, Field(ge=0, le=2**32 - 1)]
    dataset: Dataset
    clean: Clean
    split: Split
    augment: Augment
    augment_online: AugmentOnline
    train: Train
    cnn: Cnn
    vit: Vit
    vit_ft: VitFt
    evaluate: Evaluate
    compare: Compare


_PARAMS = TypeAdapter(Params)


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as parsed YAML (not validated); ConfigError when it is missing, empty, not
    UTF-8 or not YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("params file", str(path), "an existing params.yaml")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError("params file", str(path), f"UTF-8 text: byte {exc.start} (line {line}) "
                          f"is 0x{data[exc.start]:02x}, not UTF-8; save the file as UTF-8"
                          ) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("params file", str(path), f"valid YAML ({exc})") from exc
    if raw is None:
        raise ConfigError("params file", str(path),
                          "the sections seed, dataset, clean, ...: the file is empty "
                          "(restore it with `git checkout params.yaml`)")
    return raw


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read, type-check and validate params.yaml; raise ConfigError on the most telling bad value."""
    return params_from_dict(read_params(path))


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Validated Params from a whole params.yaml as a plain dict (as parsed from YAML)."""
    try:
        return _PARAMS.validate_python(raw)
    except ValidationError as exc:
        raise config_error(exc, Params, raw) from exc


def params_with(changes: dict[str, Any] | None = None, base: str | Path = SOURCE_PARAMS) -> Params:
    """`base` (this source tree's params.yaml: the defaults) with `changes` (params.yaml
    sections) merged in key by key, validated as a stage validates params.yaml."""
    return params_from_dict(merge(read_params(base), changes or {}))


def section_with(name: str, **changes: Any) -> Any:
    """Section `name` of `params_with({name: changes})`: e.g. section_with("split", val=0.2)."""
    return getattr(params_with({name: changes}), name)


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `changes` merged in, mapping by mapping (other values replaced)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_dict(obj: Any) -> Any:
    """Params (or a section) back to plain YAML-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
