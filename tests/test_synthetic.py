"""The embedded cartoon dataset: classes, determinism, and the defects the clean stage must handle."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from vitbench.data import synthetic
from vitbench.data.synthetic import CLASSES, generate

PER_CLASS = 10
SIZE = 64
CLASSES_EXPECTED = ["bird", "car", "cat", "dog", "flower", "panda", "penguin", "plane", "tiger", "tree"]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _inspect(path: Path) -> tuple[str, Image.Image | None]:
    """('ok', image) for a decodable image, else ('corrupt' | 'not_image', None)."""
    try:
        with Image.open(path) as image:
            image.load()
            return "ok", image.copy()
    except UnidentifiedImageError:
        return "not_image", None
    except OSError:
        return "corrupt", None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, generate(root, PER_CLASS, SIZE, seed=7)


@pytest.fixture(scope="module")
def files(dataset: tuple[Path, dict]) -> list[dict]:
    """Every written file with its class, status, image, and sha256."""
    root, _ = dataset
    rows = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            status, image = _inspect(path)
            rows.append({"path": path, "class": path.parent.name, "status": status, "image": image,
                         "sha": hashlib.sha256(path.read_bytes()).hexdigest()})
    return rows


def test_classes_are_the_ten_cartoon_classes(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    assert list(CLASSES) == CLASSES_EXPECTED
    assert sorted(p.name for p in root.iterdir()) == CLASSES_EXPECTED
    assert summary["classes"] == CLASSES_EXPECTED
    assert summary["files"] == sum(1 for p in root.rglob("*") if p.is_file())
    assert summary["counts"] == {c: len(list((root / c).iterdir())) for c in CLASSES_EXPECTED}


def test_same_seed_gives_byte_identical_files(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    generate(tmp_path / "again", PER_CLASS, SIZE, seed=7)
    generate(tmp_path / "other", PER_CLASS, SIZE, seed=8)
    first, again = _tree_bytes(root), _tree_bytes(tmp_path / "again")
    assert first == again
    other = _tree_bytes(tmp_path / "other")
    shared = set(first) & set(other)
    assert sum(first[k] != other[k] for k in shared) > 0.9 * len(shared)


def test_per_class_good_drawings_plus_extra_defects(files: list[dict]) -> None:
    seen: set[str] = set()
    good: Counter[str] = Counter()
    for row in files:
        image = row["image"]
        if row["status"] == "ok" and min(image.size) >= 32 and row["sha"] not in seen:
            good[row["class"]] += 1
        seen.add(row["sha"])
    assert good == {c: PER_CLASS for c in CLASSES_EXPECTED}
    assert len(files) > PER_CLASS * len(CLASSES_EXPECTED)


def test_mixes_formats_and_modes(files: list[dict]) -> None:
    distinct = {r["sha"]: r for r in files if r["status"] == "ok" and min(r["image"].size) >= 32}
    images = list(distinct.values())  # a duplicate of the CMYK JPEG must not count twice
    modes = Counter(r["image"].mode for r in images)
    suffixes = Counter(r["path"].suffix for r in images)
    assert modes["RGBA"] / len(images) == pytest.approx(0.2, abs=0.05)
    assert modes["L"] >= 1 and modes["P"] >= 1 and modes["RGB"] > len(images) / 2
    assert 1 <= modes["CMYK"] <= 2
    assert suffixes[".jpg"] > 0 and suffixes[".png"] > 0
    for r in images:
        if r["image"].mode == "CMYK":
            assert r["path"].suffix == ".jpg"
        if r["image"].mode == "RGBA":
            alpha = np.asarray(r["image"].getchannel("A"))
            assert alpha.min() == 0 and alpha.max() == 255, "RGBA drawings have a transparent background"


def test_defects_are_present(files: list[dict]) -> None:
    status = Counter(r["status"] for r in files)
    assert status["corrupt"] >= 1
    not_images = [r["path"] for r in files if r["status"] == "not_image"]
    assert any(p.suffix in (".jpg", ".png") for p in not_images), "a text file with an image extension"
    assert any(p.name == "notes.txt" for p in not_images)
    tiny = [r for r in files if r["status"] == "ok" and max(r["image"].size) < 32]
    assert len(tiny) == 1
    by_sha: dict[str, list[dict]] = {}
    for r in files:
        by_sha.setdefault(r["sha"], []).append(r)
    duplicates = [rows for rows in by_sha.values() if len(rows) > 1]
    assert duplicates, "some exact duplicates"
    for rows in duplicates:
        assert len({r["class"] for r in rows}) == 1, "duplicates stay in their class"


@pytest.mark.parametrize("cls", CLASSES_EXPECTED)
def test_every_class_draws_something_that_varies(cls: str) -> None:
    layers = [np.asarray(synthetic.draw_image(cls, np.random.default_rng([1, i]), 64, transparent=True))
              for i in range(2)]
    for layer in layers:
        covered = (layer[..., 3] > 0).mean()
        assert 0.03 < covered < 0.95
    assert not np.array_equal(layers[0], layers[1])


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_class"):
        generate(tmp_path, 0, 64, seed=1)


@pytest.mark.parametrize("cls", CLASSES_EXPECTED)
def test_object_fills_most_of_a_pale_background(cls: str) -> None:
    """What keeps the demo learnable: a large, roughly centred object on a pale, weakly saturated
    background (the same rng draws the same object with and without its background)."""
    for i in range(3):
        layer = synthetic.draw_image(cls, np.random.default_rng([3, i]), 64, transparent=True)
        picture = synthetic.draw_image(cls, np.random.default_rng([3, i]), 64)
        x0, y0, x1, y1 = layer.getchannel("A").getbbox()
        assert 0.65 <= max(x1 - x0, y1 - y0) / 64 <= 1.0
        assert abs((x0 + x1) / 128 - 0.5) < 0.15 and abs((y0 + y1) / 128 - 0.5) < 0.15
        hsv = np.asarray(picture.convert("HSV"), float) / 255
        background = hsv[np.asarray(layer.getchannel("A")) == 0]
        assert np.median(background[:, 1]) < 0.3 and np.median(background[:, 2]) > 0.6
