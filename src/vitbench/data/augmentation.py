"""The `augment` stage: materialise the training split with seeded, reproducible augmented copies.

The five transforms of the original study (horizontal flip, rotation, shift, zoom, brightness)
with the strengths from params.yaml. The geometric ones are one affine matrix per image, warped
with a reflected border. Each image's generator comes from the seed and the image's content hash,
so the output is independent of the processing order. Validation and test are never augmented.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from vitbench.core import config
from vitbench.data.imageprep import encode_png
from vitbench.data.manifest import read_labels, read_manifest, write_manifest
from vitbench.core.errors import DataError, short_list
from vitbench.core.fsutil import atomic_dir
from vitbench.core.paths import Paths
from vitbench.data.figures import augment_preview

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "class", "sha256", "origin", "augmented")
PREVIEW_ROWS = 6
PREVIEW_VARIANTS = 4
PREVIEW_FILE = "augment_preview.png"
PREVIEW_SIZE = 128  # online-augmented preview images are resized to this first


def image_rng(seed: int, sha256: str) -> np.random.Generator:
    """The generator of one image: a function of the seed and its content only."""
    return np.random.default_rng([seed, int(sha256, 16)])


def affine_matrix(width: int, height: int, *, flip: bool, angle: float, shift: tuple[float, float],
                  zoom: float) -> np.ndarray:
    """2x3 matrix: optional horizontal flip, then rotation (degrees) and zoom about the centre,
    then a shift in pixels."""
    flip_m = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if flip else np.eye(3)
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    rotate = np.vstack([cv2.getRotationMatrix2D(centre, angle, zoom), [0.0, 0.0, 1.0]])
    move = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]], [0.0, 0.0, 1.0]])
    return (move @ rotate @ flip_m)[:2]


def random_transform(image: np.ndarray, rng: np.random.Generator, cfg: config.Augment) -> np.ndarray:
    """One random variant of an HxWx3 uint8 image, the same size and dtype.

    Flip with p=0.5 (if cfg.flip), rotation U(+-rotation) degrees, shift U(+-shift) of the size,
    zoom U(1-zoom, 1+zoom), brightness factor U(1-brightness, 1+brightness). Every draw is made
    even at strength 0, so one strength does not change the others' random numbers.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"random_transform needs an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    flip = bool(rng.random() < 0.5) and cfg.flip
    angle = rng.uniform(-cfg.rotation, cfg.rotation)
    shift = rng.uniform(-cfg.shift, cfg.shift, size=2) * (width, height)
    zoom = rng.uniform(1.0 - cfg.zoom, 1.0 + cfg.zoom)
    brightness = rng.uniform(1.0 - cfg.brightness, 1.0 + cfg.brightness)
    matrix = affine_matrix(width, height, flip=flip, angle=angle, shift=tuple(shift), zoom=zoom)
    warped = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(warped * brightness), 0, 255).astype(np.uint8)


@dataclass
class _Preview:
    """The rows of the preview figure, filled while augmenting."""

    picks: dict[str, str]                                  # sha256 -> class
    originals: dict[str, np.ndarray] = field(default_factory=dict)
    variants: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def keep(self, sha: str, original: np.ndarray, variants: list[np.ndarray]) -> None:
        if sha in self.picks:
            self.originals[sha] = original
            self.variants[sha] = variants[:PREVIEW_VARIANTS]

    def draw(self, path: Path, copies: int, online: config.AugmentOnline, seed: int) -> None:
        shas = [s for s in self.picks if s in self.originals]
        originals = [self.originals[s] for s in shas]
        seen = _online_preview(online, originals, seed)
        parts = ["their augmented copies" if copies else "no copies (augment.copies = 0)",
                 ("what online augmentation makes of them in training"
                  + (" (MixUp/CutMix blend images, and labels, across rows)"
                     if online.mixes_labels else "")) if any(seen) else
                 "no online augmentation (augment_online all off)"]
        augment_preview(originals, [self.variants[s] for s in shas], [self.picks[s] for s in shas],
                        path, title=f"Training images, {parts[0]},\nand {parts[1]}", online=seen)


def _online_preview(cfg: config.AugmentOnline, images: list[np.ndarray],
                    seed: int) -> list[list[np.ndarray]]:
    """PREVIEW_VARIANTS online-augmented versions of each preview image (none when all off)."""
    if not cfg.active:
        return [[] for _ in images]
    from vitbench.data.online import online_variants  # TensorFlow: imported only when needed

    return online_variants(cfg, images, seed, PREVIEW_VARIANTS, PREVIEW_SIZE)


def augment_dataset(cfg: config.Augment, seed: int, paths: Paths,
                    online: config.AugmentOnline | None = None) -> dict:
    """Write data/augmented/train/<class>/*.png, data/augmented/train.csv and
    plots/augment_preview.png (with `online`'s augmentation of the preview images, as training
    draws it); return the counts."""
    train = _read_train(paths)
    preview = _Preview(preview_picks(train, seed))
    rows: list[tuple] = []
    with atomic_dir(paths.augmented) as tmp:
        for src, cls, sha in tqdm(list(zip(train["path"], train["class"], train["sha256"])),
                                  desc="augment", unit="img"):
            stem = tmp / "train" / cls / sha[:16]
            image = _copy_original(Path(src), sha, stem.with_suffix(".png"))
            rows.append((str(stem.with_suffix(".png")), cls, sha, sha, 0))
            rng = image_rng(seed, sha)
            variants = [random_transform(image, rng, cfg) for _ in range(cfg.copies)]
            rows += [_write_variant(v, stem.with_name(f"{stem.name}_aug{k}.png"), cls, sha)
                     for k, v in enumerate(variants, start=1)]
            preview.keep(sha, image, variants)
        df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
        write_manifest(df, tmp / paths.augmented_csv.name)   # paths stored relative to the CSV
    preview.draw(paths.plots / PREVIEW_FILE, cfg.copies, online or config.AugmentOnline.only(), seed)
    summary = _summary(df)
    log.info("augment: %d originals + %d variants = %d training images", summary["originals"],
             summary["variants"], summary["images"])
    return summary


def preview_picks(train: pd.DataFrame, seed: int) -> dict[str, str]:
    """sha256 -> class of one random image from each of up to PREVIEW_ROWS classes, spread evenly."""
    classes = sorted(train["class"].unique())
    if len(classes) > PREVIEW_ROWS:
        classes = [classes[int(i)] for i in np.linspace(0, len(classes) - 1, PREVIEW_ROWS).round()]
    rng = np.random.default_rng(seed)
    picks = {}
    for cls in classes:
        shas = sorted(train.loc[train["class"] == cls, "sha256"])
        picks[shas[int(rng.integers(len(shas)))]] = cls
    return picks


def _read_train(paths: Paths) -> pd.DataFrame:
    """The train split, checked against labels.json."""
    train = read_manifest(paths.split_csv("train"))
    if "sha256" not in train.columns:
        raise DataError(f"manifest {paths.split_csv('train')} lacks column sha256")
    if train.empty:
        raise DataError(f"{paths.split_csv('train')} lists no images (re-run `dvc repro split`)")
    unknown = sorted(set(train["class"]) - set(read_labels(paths.labels)))
    if unknown:
        raise DataError(f"{paths.split_csv('train')} has class(es) {short_list(unknown)} missing "
                        f"from {paths.labels} (re-run `dvc repro split`)")
    return train


def _copy_original(src: Path, sha: str, dest: Path) -> np.ndarray:
    """Copy a clean PNG after checking its hash; return its pixels."""
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read training image {src}: {exc} (re-run `dvc repro clean`)") from exc
    if hashlib.sha256(data).hexdigest() != sha:
        raise DataError(f"{src} no longer matches its sha256 in the split manifest: data/clean "
                        "changed after split (re-run `dvc repro split`)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _write_variant(image: np.ndarray, dest: Path, cls: str, origin: str) -> tuple:
    data = encode_png(Image.fromarray(image, "RGB"))
    dest.write_bytes(data)
    return (str(dest), cls, hashlib.sha256(data).hexdigest(), origin, 1)


def _summary(df: pd.DataFrame) -> dict:
    counts = Counter(df["class"])
    return {
        "originals": int((df["augmented"] == 0).sum()),
        "variants": int((df["augmented"] == 1).sum()),
        "images": len(df),
        "per_class": {c: counts[c] for c in sorted(counts)},
    }
