"""Near-duplicates (the same picture re-encoded at another JPEG quality or size) stay in one split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vitbench.core import config
from vitbench.data.cleaning import clean_dataset, load_rgb
from vitbench.data.imageprep import dhash
from vitbench.data.manifest import read_manifest
from vitbench.data.splitting import near_duplicate_groups, split_dataset
from vitbench.data.synthetic import generate
from vitbench.core.paths import Paths

CLEAN = config.Clean(min_side=32, max_side=128, min_per_class=5)
PAIRS = 10


def _reencode(src: Path, dest: Path, quality: int, scale: float) -> None:
    rgb, _ = load_rgb(src)  # as a photo editor shows it (transparency on white)
    size = (round(rgb.width * scale), round(rgb.height * scale))
    rgb.resize(size, Image.Resampling.BICUBIC).save(dest, "JPEG", quality=quality)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Paths, list[tuple[str, str]]]:
    """The synthetic set plus PAIRS re-encoded copies (JPEG quality 35-60, 60-140% size)."""
    paths = Paths(tmp_path_factory.mktemp("near"))
    generate(paths.raw, 16, 128, 7)
    pairs = []
    originals = sorted(p for p in paths.raw.rglob("*.png"))[::7][:PAIRS]
    for k, src in enumerate(originals):
        dest = src.with_name(f"zz_copy_{k}.jpg")
        _reencode(src, dest, quality=35 + 3 * k, scale=0.6 + 0.08 * k)
        pairs.append((src.relative_to(paths.raw).as_posix(), dest.relative_to(paths.raw).as_posix()))
    clean_dataset(CLEAN, paths)
    return paths, pairs


def _splits_of(paths: Paths) -> dict[str, str]:
    frames = [read_manifest(paths.split_csv(s)) for s in ("train", "val", "test")]
    df = pd.concat(frames)
    return dict(zip(df["source"], df["split"]))


def test_dhash_is_close_for_reencoded_copies_and_far_for_others(planted: tuple) -> None:
    paths, pairs = planted
    df = read_manifest(paths.clean_manifest).set_index("source")
    for a, b in pairs:
        if a in df.index and b in df.index:
            assert bin(int(df.loc[a, "dhash"], 16) ^ int(df.loc[b, "dhash"], 16)).count("1") <= 6
    assert dhash(Image.new("RGB", (50, 40), "white")) == "0" * 16


def test_near_duplicate_pairs_land_in_one_split_and_are_reported(planted: tuple) -> None:
    paths, pairs = planted
    kept = set(read_manifest(paths.clean_manifest)["source"])
    pairs = [(a, b) for a, b in pairs if a in kept and b in kept]
    assert len(pairs) >= 8, "the planted copies survive cleaning (they are not byte duplicates)"
    for seed in (0, 1, 2):
        metrics = split_dataset(config.section_with("split", val=0.2, test=0.3), seed, paths)
        where = _splits_of(paths)
        assert all(where[a] == where[b] for a, b in pairs), f"seed {seed}: a pair was split"
        assert metrics["near_duplicate_groups"] >= len(pairs)
    listed = pd.read_csv(paths.metrics / "split_near_duplicates.csv", keep_default_na=False)
    assert {s for pair in pairs for s in pair} <= set(listed["source"])
    assert listed.groupby("group")["split"].nunique().max() == 1


def test_without_grouping_pairs_leak(planted: tuple) -> None:
    """The check above can fail: with grouping off, some planted pairs straddle splits."""
    paths, pairs = planted
    leaked = 0
    for seed in (0, 1, 2):
        split_dataset(config.section_with("split", val=0.2, test=0.3, near_duplicate_bits=None), seed, paths)
        where = _splits_of(paths)
        leaked += sum(where.get(a) != where.get(b) for a, b in pairs)
    assert leaked > 0


def test_groups_are_transitive_and_respect_the_threshold() -> None:
    hashes = ["0000000000000000", "0000000000000007", "000000000000003f", "ffffffffffffffff"]
    assert list(near_duplicate_groups(hashes, 3)) == [0, 0, 0, 3]   # 0-1: 3 bits, 1-2: 3 bits
    assert list(near_duplicate_groups(hashes, 2)) == [0, 1, 2, 3]
    assert list(near_duplicate_groups(hashes, None)) == [0, 1, 2, 3]


def test_a_group_never_leaves_a_class_without_training_images(tmp_path: Path) -> None:
    from vitbench.data.splitting import assign_splits

    df = pd.DataFrame({"path": [f"/x/{i}.png" for i in range(6)], "class": ["a"] * 6,
                       "sha256": [f"{i:064x}" for i in range(6)], "dhash": ["0" * 16] * 6})
    out = assign_splits(df, config.section_with("split", val=0.2, test=0.2), 0)
    assert set(out["split"]) == {"train"}
