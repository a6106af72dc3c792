"""The augment stage: the five transforms, seeded and order-independent output, and the preview."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitbench.core import config
from vitbench.data.augmentation import (
    affine_matrix, augment_dataset, image_rng, preview_picks, random_transform,
)
from vitbench.data.cleaning import encode_png
from vitbench.data.manifest import read_manifest, write_manifest
from vitbench.data.splitting import split_dataset
from vitbench.core.errors import DataError
from vitbench.core.paths import Paths
from vitbench.data.figures import augment_preview

STILL = config.Augment(copies=1, flip=False, rotation=0.0, shift=0.0, zoom=0.0, brightness=0.0)
SIZE = 24


def noise(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def make_split(paths: Paths, classes: int = 3, per_class: int = 6) -> None:
    """Real tiny clean PNGs and their manifest, then the real split stage on them."""
    rows = []
    for c in range(classes):
        for i in range(per_class):
            data = encode_png(Image.fromarray(noise(100 * c + i)))
            sha = hashlib.sha256(data).hexdigest()
            path = paths.clean / f"class{c}" / f"{sha[:16]}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            rows.append((str(path), f"class{c}", sha, SIZE, SIZE, "RGB", f"class{c}/{i}.png"))
    write_manifest(pd.DataFrame(rows, columns=["path", "class", "sha256", "width", "height", "mode",
                                               "source"]), paths.clean_manifest)
    split_dataset(config.section_with("split", val=0.2, test=0.2), 0, paths)


@pytest.fixture
def split_paths(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path)
    make_split(paths)
    return paths


# --- random_transform --------------------------------------------------------------------------

def test_zero_strength_is_the_identity() -> None:
    image = noise(1)
    out = random_transform(image, np.random.default_rng(0), STILL)
    assert out.dtype == np.uint8 and np.array_equal(out, image)


def test_flip_happens_about_half_the_time() -> None:
    image = noise(2)
    cfg = config.section_with("augment", flip=True, rotation=0.0, shift=0.0, zoom=0.0, brightness=0.0)
    rng = np.random.default_rng(0)
    flipped = 0
    for _ in range(200):
        out = random_transform(image, rng, cfg)
        is_flip = np.array_equal(out, image[:, ::-1])
        assert is_flip or np.array_equal(out, image)
        flipped += is_flip
    assert 70 < flipped < 130


def test_brightness_scales_within_its_range() -> None:
    image = np.full((SIZE, SIZE, 3), 100, np.uint8)
    cfg = config.section_with("augment", flip=False, rotation=0.0, shift=0.0, zoom=0.0, brightness=0.3)
    rng = np.random.default_rng(0)
    values = [int(random_transform(image, rng, cfg)[0, 0, 0]) for _ in range(100)]
    assert min(values) >= 70 and max(values) <= 130 and len(set(values)) > 20
    bright = np.full((SIZE, SIZE, 3), 250, np.uint8)
    assert random_transform(bright, np.random.default_rng(3), cfg).max() <= 255   # clipped, no wrap


def test_geometry_moves_pixels_with_a_reflected_border() -> None:
    image = noise(3)
    cfg = config.section_with("augment", flip=False, rotation=30.0, shift=0.2, zoom=0.3, brightness=0.0)
    out = random_transform(image, np.random.default_rng(1), cfg)
    assert out.shape == image.shape and not np.array_equal(out, image)
    # a reflected border never leaves the black corners of a constant border
    assert (out.reshape(-1, 3).sum(axis=1) == 0).mean() < 0.05


def test_affine_matrix_composition() -> None:
    flip = affine_matrix(10, 6, flip=True, angle=0.0, shift=(0.0, 0.0), zoom=1.0)
    assert np.allclose(flip @ [0, 2, 1], [9, 2]) and np.allclose(flip @ [9, 5, 1], [0, 5])
    moved = affine_matrix(10, 6, flip=False, angle=0.0, shift=(2.0, -1.0), zoom=1.0)
    assert np.allclose(moved @ [3, 3, 1], [5, 2])
    turned = affine_matrix(11, 11, flip=False, angle=90.0, shift=(0.0, 0.0), zoom=2.0)
    assert np.allclose(turned @ [5, 5, 1], [5, 5])                  # about the centre
    assert np.allclose(turned @ [6, 5, 1], [5, 3])                  # doubled, turned 90 deg CCW


def test_same_rng_same_variant_and_bad_input_rejected() -> None:
    image, cfg = noise(4), config.section_with("augment")
    a = random_transform(image, image_rng(42, "ab" * 32), cfg)
    assert np.array_equal(a, random_transform(image, image_rng(42, "ab" * 32), cfg))
    assert not np.array_equal(a, random_transform(image, image_rng(43, "ab" * 32), cfg))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        random_transform(image.astype(np.float32), image_rng(0, "00"), cfg)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        random_transform(image[..., 0], image_rng(0, "00"), cfg)


# --- augment_dataset ---------------------------------------------------------------------------

def test_counts_manifest_and_files(split_paths: Paths) -> None:
    cfg = config.section_with("augment", copies=2)
    summary = augment_dataset(cfg, 7, split_paths)
    train = read_manifest(split_paths.split_csv("train"))
    df = read_manifest(split_paths.augmented_csv)

    assert list(df.columns) == ["path", "class", "sha256", "origin", "augmented"]
    assert len(df) == len(train) * 3 == summary["images"]
    assert (summary["originals"], summary["variants"]) == (len(train), 2 * len(train))
    assert summary["per_class"] == {f"class{c}": 12 for c in range(3)}
    originals = df[df["augmented"] == 0]
    assert set(originals["sha256"]) == set(train["sha256"]) and (originals["origin"] == originals["sha256"]).all()
    assert df.groupby("origin").size().eq(3).all()
    assert df["sha256"].is_unique                       # the variants really differ
    for row in df.itertuples():
        path = Path(row.path)
        assert path.parent == split_paths.augmented.resolve() / "train" / row._2
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
        with Image.open(path) as img:
            assert img.mode == "RGB" and img.size == (SIZE, SIZE)
    held_out = pd.concat([read_manifest(split_paths.split_csv(s)) for s in ("val", "test")])
    assert not set(held_out["sha256"]) & set(df["origin"])   # val/test never augmented
    assert (split_paths.plots / "augment_preview.png").is_file()


@pytest.mark.slow
def test_deterministic_and_independent_of_order(split_paths: Paths) -> None:
    cfg = config.section_with("augment", copies=2)
    augment_dataset(cfg, 5, split_paths)
    first = split_paths.augmented_csv.read_bytes()
    augment_dataset(cfg, 5, split_paths)
    assert split_paths.augmented_csv.read_bytes() == first

    train = read_manifest(split_paths.split_csv("train"))
    write_manifest(train.iloc[::-1], split_paths.split_csv("train"))
    augment_dataset(cfg, 5, split_paths)
    reordered = pd.read_csv(split_paths.augmented_csv)
    original = pd.read_csv(io.BytesIO(first))
    assert set(map(tuple, reordered.values)) == set(map(tuple, original.values))

    augment_dataset(cfg, 6, split_paths)
    other_seed = pd.read_csv(split_paths.augmented_csv)
    variants = lambda df: set(df.loc[df["augmented"] == 1, "sha256"])   # noqa: E731
    assert not variants(other_seed) & variants(original)


def test_copies_zero_means_originals_only(split_paths: Paths) -> None:
    summary = augment_dataset(config.section_with("augment", copies=0), 0, split_paths)
    df = read_manifest(split_paths.augmented_csv)
    assert summary["variants"] == 0 and (df["augmented"] == 0).all()
    assert len(df) == len(read_manifest(split_paths.split_csv("train")))
    assert not list(split_paths.augmented.rglob("*_aug*.png"))
    assert (split_paths.plots / "augment_preview.png").is_file()


def test_changed_clean_image_fails_and_keeps_previous_output(split_paths: Paths) -> None:
    augment_dataset(config.section_with("augment", copies=1), 0, split_paths)
    before = split_paths.augmented_csv.read_bytes()
    victim = Path(read_manifest(split_paths.split_csv("train"))["path"].iloc[0])
    victim.write_bytes(encode_png(Image.fromarray(noise(999))))
    with pytest.raises(DataError, match=f"{victim.name}.*sha256"):
        augment_dataset(config.section_with("augment", copies=3), 0, split_paths)
    assert split_paths.augmented_csv.read_bytes() == before
    assert not list(split_paths.augmented.rglob("*_aug3.png"))


def test_unknown_class_in_train_is_a_data_error(split_paths: Paths) -> None:
    train = read_manifest(split_paths.split_csv("train"))
    train.loc[0, "class"] = "stowaway"
    write_manifest(train, split_paths.split_csv("train"))
    with pytest.raises(DataError, match="stowaway"):
        augment_dataset(config.section_with("augment"), 0, split_paths)


# --- the preview -------------------------------------------------------------------------------

def test_preview_picks_one_image_from_up_to_six_spread_classes() -> None:
    train = pd.DataFrame({"class": [f"c{i:02d}" for i in range(10) for _ in range(3)],
                          "sha256": [f"{i:064x}" for i in range(30)]})
    picks = preview_picks(train, 0)
    assert list(picks.values()) == ["c00", "c02", "c04", "c05", "c07", "c09"]
    for sha, cls in picks.items():
        assert train.set_index("sha256").loc[sha, "class"] == cls
    assert picks == preview_picks(train.iloc[::-1], 0)


def test_augment_preview_grid(tmp_path: Path) -> None:
    originals = [noise(i, 32) for i in range(8)]
    variants = [[noise(100 + i * 10 + k, 32) for k in range(6)] for i in range(8)]
    out = augment_preview(originals, variants, [f"class {i}" for i in range(8)], tmp_path / "p.png")
    with Image.open(out) as small:
        six_by_five = small.size
    few = augment_preview(originals[:2], [v[:1] for v in variants[:2]], ["a", "b"], tmp_path / "q.png")
    with Image.open(few) as img:
        assert img.size[0] < six_by_five[0] and img.size[1] < six_by_five[1]
    assert six_by_five[0] > 600 and six_by_five[1] > 700            # 6 rows x 5 columns, legible
    with pytest.raises(ValueError, match="must match"):
        augment_preview(originals, variants[:2], ["a"], tmp_path / "r.png")
    with pytest.raises(ValueError, match="at least one"):
        augment_preview([], [], [], tmp_path / "s.png")


def test_preview_shows_online_augmentation_when_on(split_paths: Paths, tmp_path: Path) -> None:
    """The preview gains online columns (what training sees); the materialised output does not change."""
    augment_dataset(STILL, 0, split_paths)
    plain_csv = split_paths.augmented_csv.read_text()
    with Image.open(split_paths.plots / "augment_preview.png") as img:
        plain = img.size
    augment_dataset(STILL, 0, split_paths, config.AugmentOnline.only(flip=True, zoom=0.2, mixup=0.2))
    with Image.open(split_paths.plots / "augment_preview.png") as img:
        assert img.size[0] > plain[0] + 400 and img.size[1] == plain[1]   # + 4 online columns
    assert split_paths.augmented_csv.read_text() == plain_csv


def test_augment_preview_online_columns(tmp_path: Path) -> None:
    originals = [noise(i, 32) for i in range(2)]
    out = augment_preview(originals, [[], []], ["a", "b"], tmp_path / "p.png",
                          online=[[noise(9, 40)] * 3, [noise(8, 40)] * 2])
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="online lists"):
        augment_preview(originals, [[], []], ["a", "b"], tmp_path / "q.png", online=[[]])
