"""The data sections of params.yaml: dataset, clean, split, augment and augment_online
(re-exported by `vitbench.core.config`, which adds the training sections and the loading)."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Union

from pydantic import Field
from pydantic import model_validator as check

from vitbench.core.config.errors import reject
from vitbench.core.config.types import HEX64, Bool, Float, Fraction, Int, Str, section

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


@section
class Synthetic:
    per_class: Annotated[Int, Field(ge=1)]
    image_size: Annotated[Int, Field(ge=32, le=1024)]


@section
class Dataset:
    source: Str
    sha256: Annotated[Union[Str, None], Field(description="null or 64 hexadecimal digits")]
    synthetic: Synthetic
    max_extract_mb: Annotated[Int, Field(ge=1)]   # archives: refuse more than this many MB once extracted
    max_ratio: Annotated[Float, Field(ge=1.0)]    # archives: refuse an extracted/compressed size ratio above this
    max_entries: Annotated[Int, Field(ge=1)]      # archives: refuse more entries (files and folders) than this

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

    @check(mode="after")
    def _check(self) -> Dataset:
        # Whether the source exists is fetch's business (no I/O here).
        if not self.source.strip():
            reject("dataset.source", self.source,
                   "synthetic, digits, a folder, an archive or an http(s) URL")
        if self.sha256 is not None and not HEX64.fullmatch(self.sha256):
            reject("dataset.sha256", self.sha256, "null or 64 hexadecimal digits")
        return self


@section
class Clean:
    min_side: Annotated[Int, Field(ge=1)]
    max_side: Int
    min_per_class: Annotated[Int, Field(ge=1)]

    @check(mode="after")
    def _check(self) -> Clean:
        if self.max_side < self.min_side:
            reject("clean.max_side", self.max_side, f"an integer >= clean.min_side ({self.min_side})")
        return self


@section
class Split:
    val: Fraction
    test: Fraction
    max_train_per_class: Union[Annotated[Int, Field(ge=1)], None]
    near_duplicate_bits: Union[Annotated[Int, Field(ge=0, le=32)], None]  # dHash distance: one group
    folds: Union[Annotated[Int, Field(ge=2)], None]   # k-fold cross-validation; None: one split
    fold: Annotated[Int, Field(ge=0)]                 # the test fold when folds is set

    @check(mode="after")
    def _check(self) -> Split:
        if self.folds is None:
            if self.val + self.test >= 1.0:
                reject("split.val + split.test", self.val + self.test,
                       "a sum below 1, so that a training set remains")
            return self
        if self.fold >= self.folds:
            reject("split.fold", self.fold, f"an integer from 0 to split.folds - 1 ({self.folds - 1})")
        if self.val + 1 / self.folds >= 1.0:
            reject("split.val", self.val, f"a fraction below 1 - 1/split.folds ({1 - 1 / self.folds:g}), "
                   "so that a training set remains beside the test fold")
        return self


@section
class Augment:
    copies: Annotated[Int, Field(ge=0, le=100)]
    flip: Bool
    rotation: Annotated[Float, Field(ge=0.0, le=180.0)]
    shift: Annotated[Float, Field(ge=0.0, le=0.5)]
    zoom: Annotated[Float, Field(ge=0.0, le=0.9)]
    brightness: Annotated[Float, Field(ge=0.0, le=0.9)]


@section
class AugmentOnline:
    """Augmentation drawn afresh for every training batch (Keras preprocessing layers in tf.data).

    Each key is off at 0 / false. Strengths follow the Keras layers: rotation in degrees,
    translate and zoom as fractions of the size, brightness and contrast as factors, randaugment
    as RandAugment's magnitude (0..1, two ops per image), erasing as the probability of erasing
    one rectangle, mixup as MixUp's alpha, cutmix as CutMix's beta parameter.
    """

    flip: Bool
    rotation: Annotated[Float, Field(ge=0.0, le=180.0)]
    translate: Annotated[Float, Field(ge=0.0, le=0.5)]
    zoom: Annotated[Float, Field(ge=0.0, le=0.9)]
    brightness: Annotated[Float, Field(ge=0.0, le=1.0)]
    contrast: Annotated[Float, Field(ge=0.0, le=1.0)]
    randaugment: Annotated[Float, Field(ge=0.0, le=1.0)]
    erasing: Annotated[Float, Field(ge=0.0, le=1.0)]
    mixup: Annotated[Float, Field(ge=0.0, le=10.0)]
    cutmix: Annotated[Float, Field(ge=0.0, le=10.0)]

    @classmethod
    def only(cls, **on: float | bool) -> AugmentOnline:
        """Every layer off except those in `on` (`only()`: no online augmentation)."""
        off = {f.name: (False if f.name == "flip" else 0.0) for f in dataclasses.fields(cls)}
        return cls(**{**off, **on})

    @property
    def active(self) -> dict[str, float | bool]:
        """The keys that are on, with their strengths."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v}

    @property
    def mixes_labels(self) -> bool:
        """MixUp or CutMix: training labels become soft (one-hot mixtures)."""
        return self.mixup > 0 or self.cutmix > 0
