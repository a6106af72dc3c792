"""The clean stage: the untrusted-image decoder, every rejection reason, and atomic outputs."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitbench.core import config
from vitbench.data.cleaning import (
    CONVERTED_KINDS, REMOVED_REASONS, BadImageError, clean_dataset, encode_png, load_rgb,
)
from vitbench.data.manifest import read_manifest
from vitbench.core.errors import DataError
from vitbench.core.fsutil import read_json, sha256_file
from vitbench.core.paths import Paths

CFG = config.Clean(min_side=16, max_side=64, min_per_class=1)


def noise(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """A random image of `size` (w, h): distinct seeds never collide."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def save(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def reason_of(path: Path, **kw) -> str:
    with pytest.raises(BadImageError) as info:
        load_rgb(path, **kw)
    assert str(path) in str(info.value)
    return info.value.reason


# --- load_rgb ----------------------------------------------------------------------------------

def test_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    data = jpeg_bytes(noise((64, 64), 1))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert reason_of(path) == "corrupt"


def test_text_named_jpg_is_not_image(tmp_path: Path) -> None:
    path = tmp_path / "note.jpg"
    path.write_text("this is not a picture\n")
    assert reason_of(path) == "not_image"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert reason_of(empty) == "not_image"


def test_missing_file_is_a_data_error_not_a_rejection(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read image file") as info:
        load_rgb(tmp_path / "nope.png")
    assert not isinstance(info.value, BadImageError)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(tmp_path: Path, mode: str) -> None:
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))           # fully transparent black...
    img.paste((200, 10, 10, 255), (0, 0, 16, 32))             # ...with an opaque left half
    img.putpixel((20, 5), (0, 0, 0, 128))                    # and one half-transparent black pixel
    rgb, original = load_rgb(save(img.convert(mode), tmp_path / "a.png"))
    assert (original, rgb.mode, rgb.size) == (mode, "RGB", (32, 32))
    assert rgb.getpixel((30, 30)) == (255, 255, 255)
    left = rgb.getpixel((2, 2))
    assert left == ((200, 10, 10) if mode == "RGBA" else (left[0],) * 3) and left[0] < 255
    assert 120 <= rgb.getpixel((20, 5))[0] <= 135  # 50% black over white


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    img.paste(1, (0, 0, 16, 32))
    path = save(img, tmp_path / "p.png", transparency=0)
    rgb, original = load_rgb(path)
    assert original == "P"
    assert rgb.getpixel((30, 3)) == (255, 255, 255)
    assert rgb.getpixel((3, 3)) == (0, 200, 0)


def test_palette_without_transparency_keeps_colours(tmp_path: Path) -> None:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([10, 20, 30] + [0] * 765)
    rgb, original = load_rgb(save(img, tmp_path / "p.gif"))
    assert (original, rgb.getpixel((5, 5))) == ("P", (10, 20, 30))


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_rgb(tmp_path: Path, mode: str) -> None:
    img = noise((32, 32), 2, "L").convert(mode)
    rgb, original = load_rgb(save(img, tmp_path / "g.png"))
    arr = np.asarray(rgb)
    assert original == mode and arr.shape == (32, 32, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert (arr[..., 0] == np.asarray(img.convert("L"))).all()


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    img = Image.new("CMYK", (32, 32), (0, 0, 0, 0))          # no ink: white
    img.paste((0, 255, 255, 0), (0, 0, 16, 32))              # magenta + yellow: red
    rgb, original = load_rgb(save(img, tmp_path / "c.tif"))
    assert (original, rgb.mode) == ("CMYK", "RGB")
    assert rgb.getpixel((30, 3)) == (255, 255, 255)
    assert rgb.getpixel((3, 3)) == (255, 0, 0)


def test_16bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.zeros((32, 32), np.uint16)
    arr[:, :10], arr[:, 10:20] = 65535, 32896
    rgb, original = load_rgb(save(Image.fromarray(arr), tmp_path / "d.png"))
    assert original.startswith("I;16")
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((15, 0)) == (128, 128, 128)
    assert rgb.getpixel((25, 0)) == (0, 0, 0)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 30), (255, 0, 0))
    img.paste((0, 0, 255), (30, 0, 60, 30))                  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6                                         # "rotate 90 CW to display"
    rgb, _ = load_rgb(save(img, tmp_path / "r.jpg", exif=exif.tobytes()))
    assert rgb.size == (30, 60)
    top, bottom = rgb.getpixel((15, 5)), rgb.getpixel((15, 55))
    assert top[0] > 200 and top[2] < 50                      # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50


def test_decompression_bomb_error_and_warning_are_rejected(tmp_path: Path) -> None:
    path = save(noise((64, 64), 3), tmp_path / "big.png")   # 4096 pixels
    before = Image.MAX_IMAGE_PIXELS
    assert reason_of(path, max_pixels=1000) == "decompression_bomb"   # PIL's error (> 2x limit)
    assert reason_of(path, max_pixels=3000) == "decompression_bomb"   # PIL's warning (> limit)
    assert Image.MAX_IMAGE_PIXELS == before                 # the global limit is restored
    assert load_rgb(path, max_pixels=4096)[0].size == (64, 64)


def test_max_pixels_overrides_pils_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(noise((64, 64), 4), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert reason_of(path) == "decompression_bomb"
    assert load_rgb(path, max_pixels=10_000)[0].size == (64, 64)


def test_encode_png_is_deterministic_and_metadata_free() -> None:
    img = noise((20, 20), 5)
    tagged = img.copy()
    tagged.info = {"dpi": (300, 300), "comment": b"x"}
    assert encode_png(img) == encode_png(tagged)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(img)))), np.asarray(img))


# --- clean_dataset -----------------------------------------------------------------------------

def build_raw(raw: Path) -> None:
    """Two classes with one of every problem the stage must handle."""
    for i in range(3):
        save(noise((40, 40), 10 + i), raw / "cat" / f"ok{i}.png")
        save(noise((40, 40), 20 + i), raw / "dog" / f"ok{i}.jpg", quality=95)
    save(noise((200, 100), 30), raw / "cat" / "wide.png")                 # downscaled to 64x32
    save(noise((40, 40), 10), raw / "cat" / "zz_copy_of_ok0.bmp")            # duplicate in class
    save(noise((40, 40), 40), raw / "cat" / "shared.png")                 # same image ...
    save(noise((40, 40), 40), raw / "dog" / "shared.png")                 # ... under two classes
    save(noise((10, 40), 41), raw / "dog" / "tiny.png")                   # too small
    save(noise((300, 20), 42), raw / "dog" / "sliver.png")                # 64x4 after downscale
    save(noise((40, 40), 43, "RGBA"), raw / "dog" / "rgba.png")
    save(noise((40, 40), 44, "L"), raw / "dog" / "gray.png")
    save(noise((150, 150), 45), raw / "dog" / "bomb.png")                 # over max_pixels
    (raw / "dog" / "readme.jpg").write_text("hello")
    data = jpeg_bytes(noise((64, 64), 46))
    (raw / "cat" / "broken.jpg").write_bytes(data[: len(data) // 3])


@pytest.fixture
def built(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path)
    build_raw(paths.raw)
    return paths


def test_clean_dataset_end_to_end(built: Paths, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        metrics = clean_dataset(CFG, built, max_pixels=20_000)

    assert metrics == read_json(built.metrics_json("clean"))
    assert set(metrics) == {"kept", "classes", "removed", "converted"}, "flat for dvc metrics show"
    assert tuple(metrics["removed"]) == REMOVED_REASONS
    assert tuple(metrics["converted"]) == CONVERTED_KINDS
    assert metrics["removed"] == {"corrupt": 1, "not_image": 1, "too_small": 2, "duplicate": 1,
                                  "decompression_bomb": 1, "label_conflict": 2}
    assert metrics["kept"] == 9
    assert metrics["converted"] == {"rgba": 1, "palette": 0, "grayscale": 1, "cmyk": 0, "la": 0,
                                    "16bit": 0, "other": 0}
    per_class = pd.read_csv(built.metrics / "clean_classes.csv", keep_default_na=False)
    assert per_class.to_dict("records") == [{"class": "cat", "kept": 4, "removed": 3},
                                            {"class": "dog", "kept": 5, "removed": 5}]

    # the conflict warning names both files and both classes
    conflict = [r.getMessage() for r in caplog.records if "label conflict" in r.getMessage()]
    assert len(conflict) == 1
    assert all(s in conflict[0] for s in ("cat/shared.png", "dog/shared.png", "class cat", "class dog"))

    df = read_manifest(built.clean_manifest)
    assert list(df.columns) == ["path", "class", "sha256", "width", "height", "mode", "source",
                                "dhash"]
    assert df["dhash"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert len(df) == 9 and df["sha256"].is_unique
    assert "shared" not in " ".join(df["source"])
    for row in df.itertuples():
        path = Path(row.path)
        assert path.parent == built.clean / row._2 and path.name == f"{row.sha256[:16]}.png"
        assert sha256_file(path) == row.sha256
        with Image.open(path) as img:
            assert img.mode == "RGB" and img.size == (row.width, row.height)
            assert max(img.size) <= CFG.max_side and min(img.size) >= CFG.min_side
    assert sorted(p.name for p in built.clean.rglob("*.png")) == sorted(Path(p).name for p in df["path"])
    wide = df[df["source"] == "cat/wide.png"].iloc[0]
    assert (wide.width, wide.height) == (64, 32)
    assert set(df[df["source"].isin(["dog/rgba.png", "dog/gray.png"])]["mode"]) == {"RGBA", "L"}

    rejected = pd.read_csv(built.metrics / "clean_rejected.csv")
    assert list(rejected.columns) == ["source", "class", "reason", "detail"]
    by_source = dict(zip(rejected["source"], rejected["reason"]))
    assert by_source == {"cat/broken.jpg": "corrupt", "cat/zz_copy_of_ok0.bmp": "duplicate",
                         "cat/shared.png": "label_conflict", "dog/shared.png": "label_conflict",
                         "dog/tiny.png": "too_small", "dog/sliver.png": "too_small",
                         "dog/bomb.png": "decompression_bomb", "dog/readme.jpg": "not_image"}
    assert "cat/ok0.png" in rejected.set_index("source").loc["cat/zz_copy_of_ok0.bmp", "detail"]


def test_clean_is_deterministic(built: Paths) -> None:
    clean_dataset(CFG, built)
    first = built.clean_manifest.read_bytes()
    clean_dataset(CFG, built)
    assert built.clean_manifest.read_bytes() == first


def test_min_per_class_error_leaves_previous_output_intact(built: Paths) -> None:
    clean_dataset(CFG, built)
    manifest, metrics = built.clean_manifest.read_bytes(), built.metrics_json("clean").read_bytes()
    files = sorted(built.clean.rglob("*"))
    (built.raw / "bird").mkdir()
    save(noise((40, 40), 99), built.raw / "bird" / "one.png")
    (built.raw / "bird" / "junk.jpg").write_text("x")

    with pytest.raises(DataError, match="clean.min_per_class") as info:
        clean_dataset(config.Clean(min_side=16, max_side=64, min_per_class=3), built)
    message = str(info.value)
    assert "'bird' kept 1 of 2 (1 not_image)" in message
    assert "'cat'" not in message and "'dog'" not in message   # those have >= 3

    assert built.clean_manifest.read_bytes() == manifest
    assert built.metrics_json("clean").read_bytes() == metrics
    assert sorted(built.clean.rglob("*")) == files
    assert sorted(p.name for p in built.clean.parent.iterdir()) == ["clean", "raw"]  # no temp left


def test_single_class_after_cleaning_is_an_error_naming_it(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    for i in range(4):
        save(noise((40, 40), 60 + i), paths.raw / "NA" / f"{i}.png")
    with pytest.raises(DataError, match="only one class is left after cleaning: 'NA' \\(4 images\\)"):
        clean_dataset(config.Clean(min_side=16, max_side=64, min_per_class=1), paths)
    assert not paths.clean.exists()


def test_error_listing_many_classes_is_capped(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    for c in range(40):
        save(noise((40, 40), 100 + c), paths.raw / f"class{c:02d}" / "one.png")
    with pytest.raises(DataError) as info:
        clean_dataset(config.Clean(min_side=16, max_side=64, min_per_class=2), paths)
    assert "40 class(es)" in str(info.value) and "and 30 more" in str(info.value)
    assert len(str(info.value)) < 1500


@pytest.mark.parametrize("setup", ["missing", "empty", "no_files"])
def test_missing_or_empty_raw_is_a_data_error(tmp_path: Path, setup: str) -> None:
    paths = Paths(tmp_path)
    if setup != "missing":
        paths.raw.mkdir(parents=True)
    if setup == "no_files":
        (paths.raw / "cat").mkdir()
    with pytest.raises(DataError, match=re.escape(str(paths.raw))):
        clean_dataset(CFG, paths)
    assert not paths.clean.exists() and not paths.metrics.exists()
