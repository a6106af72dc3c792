"""The typed params.yaml: one dataclass per section, loaded and validated once.

`load_params()` reads the file, checks every key and type, then the cross-field rules, and raises
`ConfigError` naming the key, the value and what is allowed, before any stage touches an output.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from vitbench.errors import ConfigError, short_list
from vitbench.model_ids import CNN_ARCHS, MODEL_IDS  # noqa: F401 (re-exported: one table)

PARAMS_FILE = "params.yaml"
_YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
VIT_FT_WEIGHTS = ("imagenet21k", "imagenet21k+imagenet2012")
# vit_ft.variant -> (patch size, encoder blocks); the models themselves are
# vitbench.models.pretrained_vit.VARIANTS (tests/test_deit.py checks that the two agree)
VIT_FT_VARIANTS = {"ti16": (16, 12), "s16": (16, 12), "s32": (32, 12), "b16": (16, 12),
                   "b32": (32, 12), "l16": (16, 24), "l32": (32, 24)}
VIT_FT_BLOCKS = 12      # default vit_ft.blocks; it keeps the first N of the variant's blocks
VIT_FT_NORMALIZE = ("auto", "tf", "torch")
VIT_TOKENIZERS = ("patch", "conv")

Pretrained = Union[bool, Literal["auto"]]
CacheMode = Literal["auto", "memory", "disk", "none"]  # train.cache (data/pipeline.py)


@dataclass(frozen=True)
class Synthetic:
    per_class: int = 40
    image_size: int = 128

    def validate(self, key: str) -> None:
        _check_range(f"{key}.per_class", self.per_class, lo=1)
        _check_range(f"{key}.image_size", self.image_size, lo=32, hi=1024)


@dataclass(frozen=True)
class Dataset:
    source: str = "synthetic"
    sha256: str | None = None
    synthetic: Synthetic = field(default_factory=Synthetic)
    max_extract_mb: int = 20_000   # archives: refuse more than this many MB once extracted
    max_ratio: float = 200.0       # archives: refuse an extracted/compressed size ratio above this

    @property
    def kind(self) -> str:
        """One of synthetic, digits, folder, archive, url."""
        if self.source in ("synthetic", "digits"):
            return self.source
        if re.match(r"^https?://", self.source):
            return "url"
        if self.source.lower().endswith(ARCHIVE_SUFFIXES):
            return "archive"
        return "folder"

    def validate(self, key: str) -> None:
        # Type and range checks only: whether the source exists is fetch's business (no I/O here).
        if not self.source.strip():
            raise ConfigError(f"{key}.source", self.source,
                              "synthetic, digits, a folder, an archive or an http(s) URL")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ConfigError(f"{key}.sha256", self.sha256, "null or 64 hexadecimal digits")
        _check_range(f"{key}.max_extract_mb", self.max_extract_mb, lo=1)
        _check_range(f"{key}.max_ratio", self.max_ratio, lo=1.0)
        self.synthetic.validate(f"{key}.synthetic")


@dataclass(frozen=True)
class Clean:
    min_side: int = 32
    max_side: int = 256
    min_per_class: int = 10

    def validate(self, key: str) -> None:
        _check_range(f"{key}.min_side", self.min_side, lo=1)
        _check_range(f"{key}.max_side", self.max_side, lo=self.min_side,
                     what=f"an integer >= clean.min_side ({self.min_side})")
        _check_range(f"{key}.min_per_class", self.min_per_class, lo=1)


@dataclass(frozen=True)
class Split:
    val: float = 0.15
    test: float = 0.15
    max_train_per_class: int | None = None
    near_duplicate_bits: int | None = 6   # dHash distance that makes two images of a class one group

    def validate(self, key: str) -> None:
        _check_range(f"{key}.val", self.val, lo=0.0, hi=1.0, hi_open=True)
        _check_range(f"{key}.test", self.test, lo=0.0, hi=1.0, hi_open=True)
        if self.val + self.test >= 1.0:
            raise ConfigError(
                f"{key}.val + {key}.test", self.val + self.test,
                "a sum below 1, so that a training set remains",
            )
        if self.max_train_per_class is not None:
            _check_range(f"{key}.max_train_per_class", self.max_train_per_class, lo=1)
        if self.near_duplicate_bits is not None:
            _check_range(f"{key}.near_duplicate_bits", self.near_duplicate_bits, lo=0, hi=32)


@dataclass(frozen=True)
class Augment:
    copies: int = 1
    flip: bool = True
    rotation: float = 15.0
    shift: float = 0.1
    zoom: float = 0.2
    brightness: float = 0.2

    def validate(self, key: str) -> None:
        _check_range(f"{key}.copies", self.copies, lo=0, hi=100)
        _check_range(f"{key}.rotation", self.rotation, lo=0.0, hi=180.0)
        _check_range(f"{key}.shift", self.shift, lo=0.0, hi=0.5)
        _check_range(f"{key}.zoom", self.zoom, lo=0.0, hi=0.9)
        _check_range(f"{key}.brightness", self.brightness, lo=0.0, hi=0.9)


@dataclass(frozen=True)
class AugmentOnline:
    """Augmentation drawn afresh for every training batch (Keras preprocessing layers in tf.data).

    Each key is off at 0 / false. Strengths follow the Keras layers: rotation in degrees,
    translate and zoom as fractions of the size, brightness and contrast as factors, randaugment
    as RandAugment's magnitude (0..1, two ops per image), erasing as the probability of erasing
    one rectangle, mixup as MixUp's alpha, cutmix as CutMix's beta parameter.
    """

    flip: bool = False
    rotation: float = 0.0
    translate: float = 0.0
    zoom: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    randaugment: float = 0.0
    erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0

    @property
    def active(self) -> dict[str, float | bool]:
        """The keys that are on, with their strengths."""
        return {k: v for k, v in to_dict(self).items() if v}

    @property
    def mixes_labels(self) -> bool:
        """MixUp or CutMix: training labels become soft (one-hot mixtures)."""
        return self.mixup > 0 or self.cutmix > 0

    def validate(self, key: str) -> None:
        _check_range(f"{key}.rotation", self.rotation, lo=0.0, hi=180.0)
        _check_range(f"{key}.translate", self.translate, lo=0.0, hi=0.5)
        _check_range(f"{key}.zoom", self.zoom, lo=0.0, hi=0.9)
        _check_range(f"{key}.brightness", self.brightness, lo=0.0, hi=1.0)
        _check_range(f"{key}.contrast", self.contrast, lo=0.0, hi=1.0)
        _check_range(f"{key}.randaugment", self.randaugment, lo=0.0, hi=1.0)
        _check_range(f"{key}.erasing", self.erasing, lo=0.0, hi=1.0)
        _check_range(f"{key}.mixup", self.mixup, lo=0.0, hi=10.0)
        _check_range(f"{key}.cutmix", self.cutmix, lo=0.0, hi=10.0)


@dataclass(frozen=True)
class Train:
    epochs: int = 5
    batch_size: int = 32
    patience: int = 3
    mixed_precision: Pretrained = "auto"
    deterministic: bool = False     # TensorFlow op determinism: one seed, the same metrics
    cache: CacheMode = "auto"

    def validate(self, key: str) -> None:
        _check_range(f"{key}.epochs", self.epochs, lo=1)
        _check_range(f"{key}.batch_size", self.batch_size, lo=1, hi=4096)
        _check_range(f"{key}.patience", self.patience, lo=0)

    def for_stage(self, section: Any) -> Train:
        """This Train with `epochs` replaced by the stage section's own `epochs` when set (the
        per-stage budget of cnn, vit, vit_ft); `train.epochs` otherwise."""
        own = getattr(section, "epochs", None)
        return self if own is None else dataclasses.replace(self, epochs=own)


@dataclass(frozen=True)
class LearningRate:
    """One training phase's recipe: peak learning rate, decoupled weight decay (0 = Adam, else
    AdamW), warm-up fraction (0 = constant lr, else linear warm-up then cosine to 0) and label
    smoothing of the cross-entropy."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.0
    label_smoothing: float = 0.0

    def validate(self, key: str) -> None:
        _check_range(f"{key}.lr", self.lr, lo=0.0, lo_open=True, hi=1.0)
        _check_recipe(key, self)


@dataclass(frozen=True)
class Cnn:
    arch: str = "mobilenetv2"
    image_size: int = 96
    pretrained: Pretrained = "auto"
    dropout: float = 0.2
    weights: str = "imagenet"
    weights_sha256: str | None = None
    feature_cache: bool = True
    transfer: LearningRate = field(default_factory=lambda: LearningRate(1e-3))
    finetune: LearningRate = field(default_factory=lambda: LearningRate(1e-5))
    epochs: int | None = None       # each phase's epochs; null = train.epochs

    def validate(self, key: str) -> None:
        _check_epochs(key, self.epochs)
        if self.arch not in CNN_ARCHS:
            raise ConfigError(f"{key}.arch", self.arch, f"one of {', '.join(CNN_ARCHS)}")
        _check_range(f"{key}.image_size", self.image_size, lo=32, hi=1024)
        _check_range(f"{key}.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        w = self.weights  # existence and content are checked where the weights are loaded
        if w != "imagenet" and not re.match(r"^https?://[^/]+/.*[^/]$", w) and not w.endswith(".h5"):
            raise ConfigError(f"{key}.weights", w, "imagenet, an http(s) URL of a file, or the "
                              "path of a no-top .h5 weights file")
        if self.weights_sha256 is not None:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", self.weights_sha256):
                raise ConfigError(f"{key}.weights_sha256", self.weights_sha256,
                                  "null or a sha256 of 64 hex digits")
            if w == "imagenet":
                raise ConfigError(f"{key}.weights_sha256", self.weights_sha256,
                                  "null when cnn.weights is imagenet (Keras names and checks "
                                  "those files itself)")
        self.transfer.validate(f"{key}.transfer")
        self.finetune.validate(f"{key}.finetune")


@dataclass(frozen=True)
class Vit:
    image_size: int = 48
    patch_size: int = 6
    projection_dim: int = 64
    num_heads: int = 4
    layers: int = 4
    mlp_head: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    spt: bool = True
    lsa: bool = True
    warmup: float = 0.1
    label_smoothing: float = 0.0
    drop_path: float = 0.0
    tokenizer: str = "patch"
    seq_pool: bool = False
    epochs: int | None = None       # this stage's epochs; null = train.epochs

    @property
    def recipe(self) -> LearningRate:
        """lr, weight_decay, warmup and label_smoothing as one phase's recipe."""
        return LearningRate(self.lr, self.weight_decay, self.warmup, self.label_smoothing)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate(self, key: str) -> None:
        _check_range(f"{key}.image_size", self.image_size, lo=8, hi=1024)
        _check_range(f"{key}.patch_size", self.patch_size, lo=1, hi=self.image_size)
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"{key}.patch_size", self.patch_size,
                f"a divisor of vit.image_size ({self.image_size}), e.g. "
                f"{', '.join(str(d) for d in _divisors(self.image_size))}",
            )
        _check_range(f"{key}.projection_dim", self.projection_dim, lo=1)
        _check_range(f"{key}.num_heads", self.num_heads, lo=1)
        if self.projection_dim % self.num_heads:
            raise ConfigError(
                f"{key}.num_heads", self.num_heads,
                f"a divisor of vit.projection_dim ({self.projection_dim})",
            )
        _check_range(f"{key}.layers", self.layers, lo=1)
        for i, units in enumerate(self.mlp_head):
            _check_range(f"{key}.mlp_head[{i}]", units, lo=1)
        _check_range(f"{key}.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        _check_range(f"{key}.lr", self.lr, lo=0.0, lo_open=True, hi=1.0)
        _check_recipe(key, self.recipe)
        _check_range(f"{key}.drop_path", self.drop_path, lo=0.0, hi=1.0, hi_open=True)
        if self.tokenizer not in VIT_TOKENIZERS:
            raise ConfigError(f"{key}.tokenizer", self.tokenizer, f"one of {', '.join(VIT_TOKENIZERS)}")
        if self.tokenizer == "conv" and self.spt:
            raise ConfigError(f"{key}.spt", self.spt,
                              f"false when {key}.tokenizer is conv (SPT is a patch tokenizer)")
        if self.tokenizer == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ConfigError(f"{key}.patch_size", self.patch_size,
                              f"a power of two >= 2 when {key}.tokenizer is conv (the token stride: "
                              f"log2(patch_size) conv + pool/2 stages), e.g. 4, 8, 16")
        _check_epochs(key, self.epochs)


@dataclass(frozen=True)
class VitFt:
    variant: str = "b32"
    image_size: int = 64
    pretrained: Pretrained = "auto"
    weights: str = "imagenet21k+imagenet2012"
    blocks: int | None = VIT_FT_BLOCKS   # None: all of the variant's blocks
    normalize: str = "auto"              # input normalization: auto (by the weights) | tf | torch
    feature_cache: bool = True
    transfer: LearningRate = field(default_factory=lambda: LearningRate(1e-3))
    finetune: LearningRate = field(default_factory=lambda: LearningRate(1e-5))
    epochs: int | None = None       # each phase's epochs; null = train.epochs

    @property
    def patch_size(self) -> int:
        return VIT_FT_VARIANTS[self.variant][0]

    def validate(self, key: str) -> None:
        _check_epochs(key, self.epochs)
        if self.variant not in VIT_FT_VARIANTS:
            raise ConfigError(f"{key}.variant", self.variant, f"one of {', '.join(VIT_FT_VARIANTS)}")
        _check_range(f"{key}.image_size", self.image_size, lo=self.patch_size, hi=1024)
        if self.blocks is not None:
            _check_range(f"{key}.blocks", self.blocks, lo=1, hi=VIT_FT_VARIANTS[self.variant][1])
        if self.normalize not in VIT_FT_NORMALIZE:
            raise ConfigError(f"{key}.normalize", self.normalize, " | ".join(VIT_FT_NORMALIZE))
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"{key}.image_size", self.image_size,
                f"a multiple of the {self.variant} patch size ({self.patch_size}), e.g. "
                f"{self.patch_size * 2}, {self.patch_size * 7}",
            )
        if not self.weights.strip():  # whether a local file exists is checked where it is used
            raise ConfigError(f"{key}.weights", self.weights,
                              f"{' or '.join(VIT_FT_WEIGHTS)}, an http(s) URL, or an .npz file path")
        self.transfer.validate(f"{key}.transfer")
        self.finetune.validate(f"{key}.finetune")


@dataclass(frozen=True)
class Evaluate:
    batch_size: int = 64
    attention_samples: int = 4
    robustness: bool = True         # accuracy under 5 corruptions x 3 severities

    def validate(self, key: str) -> None:
        _check_range(f"{key}.batch_size", self.batch_size, lo=1, hi=4096)
        _check_range(f"{key}.attention_samples", self.attention_samples, lo=0, hi=64)


@dataclass(frozen=True)
class Compare:
    samples: int = 10

    def validate(self, key: str) -> None:
        _check_range(f"{key}.samples", self.samples, lo=1, hi=100)


@dataclass(frozen=True)
class Params:
    seed: int = 42
    dataset: Dataset = field(default_factory=Dataset)
    clean: Clean = field(default_factory=Clean)
    split: Split = field(default_factory=Split)
    augment: Augment = field(default_factory=Augment)
    augment_online: AugmentOnline = field(default_factory=AugmentOnline)
    train: Train = field(default_factory=Train)
    cnn: Cnn = field(default_factory=Cnn)
    vit: Vit = field(default_factory=Vit)
    vit_ft: VitFt = field(default_factory=VitFt)
    evaluate: Evaluate = field(default_factory=Evaluate)
    compare: Compare = field(default_factory=Compare)

    def validate(self) -> None:
        _check_range("seed", self.seed, lo=0, hi=2**32 - 1)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(f.name)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read, type-check and validate params.yaml; raise ConfigError on the first bad value."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("params file", str(path), "an existing params.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("params file", str(path), f"valid YAML ({exc})") from exc
    if raw is None:
        raise ConfigError("params file", str(path),
                          "the sections seed, dataset, clean, ...: the file is empty "
                          "(restore it with `git checkout params.yaml`)")
    return params_from_dict(raw)


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Build validated Params from a plain dict (as parsed from YAML)."""
    params = _build(Params, raw, "")
    params.validate()
    return params


def to_dict(obj: Any) -> Any:
    """Params (or a section) back to plain YAML-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


# --- the generic, type-hint driven loader -------------------------------------------------------

def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "params", raw, f"a mapping of {cls.__name__} keys")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names, key=str)  # keys of mixed types (`1: a`) sort too
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        more = f" ({len(unknown)} unknown keys: {short_list(unknown)})" if len(unknown) > 1 else ""
        close = difflib.get_close_matches(str(unknown[0]), sorted(names), n=1, cutoff=0.6)
        guess = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(key, raw[unknown[0]],
                          f"a known key here{guess}: {', '.join(sorted(names))}{more}")
    kwargs = {}
    for name in names & set(raw):
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(hints[name], raw[name], key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(exc.allowed)
        raise ConfigError(key, value, " or ".join(errors))
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, " or ".join(repr(a) for a in allowed))
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, f"a list of {item_tp.__name__}")
        return tuple(_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):
            number = float(value)  # `1e-5`: a float in YAML 1.2 (DVC, ruamel), a string to PyYAML
        else:
            raise ConfigError(key, value, "a number")
        if not math.isfinite(number):  # `.nan` and `.inf` pass every range check
            raise ConfigError(key, value, "a finite number (not .nan or .inf)")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a string")
    raise TypeError(f"unsupported type {tp!r} for {key}")  # a bug in this module, not in params


def _check_range(key: str, value: float, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, what: str | None = None) -> None:
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        if what is None:
            kind = "an integer" if isinstance(value, int) else "a number"
            lo_s = f"{'>' if lo_open else '>='} {lo}" if lo is not None else ""
            hi_s = f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""
            what = f"{kind} {' and '.join(s for s in (lo_s, hi_s) if s)}"
        raise ConfigError(key, value, what)


def _check_recipe(key: str, cfg: LearningRate) -> None:
    _check_range(f"{key}.weight_decay", cfg.weight_decay, lo=0.0, hi=1.0)
    _check_range(f"{key}.warmup", cfg.warmup, lo=0.0, hi=1.0, hi_open=True)
    _check_range(f"{key}.label_smoothing", cfg.label_smoothing, lo=0.0, hi=1.0, hi_open=True)


def _check_epochs(key: str, epochs: int | None) -> None:
    if epochs is not None:
        _check_range(f"{key}.epochs", epochs, lo=1)


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n) if n % d == 0][:6]
