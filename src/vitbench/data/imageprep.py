"""The one image preparation of the project: what a model sees, in training and in `vitbench predict`.

    decode (`cleaning.load_rgb`: EXIF orientation, alpha on white, any mode to RGB)
    -> downscale so the longest side is at most `clean.max_side` (LANCZOS, aspect kept)
    -> resize to the model's square input (bilinear with antialiasing, `pipeline.resize_uint8`)

`clean` runs the first two steps and stores lossless PNGs, the input pipeline runs the last one on
those PNGs, and `prepare_image` runs all three for a new file, so a 4000-px phone photo reaches a
model exactly as a training image did. Clean records the transform in `data/clean/transform.json`
and every trained model copies it into its record.json (`input`), so a saved model describes its
own input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitbench.fsutil import read_json, write_json

TRANSFORM_FILE = "transform.json"
DOWNSCALE = "lanczos"
RESIZE = "bilinear antialias"
DHASH_SIZE = 8  # 8x8 = 64-bit difference hash


def fit_max_side(img: Image.Image, max_side: int | None) -> Image.Image:
    """Downscale so the longest side is at most `max_side` (LANCZOS, aspect kept); never upscale."""
    if max_side is None:
        return img
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    if scale == 1.0:
        return img
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def prepare_image(path: str | Path, max_side: int | None, image_size: int,
                  max_pixels: int | None = None) -> np.ndarray:
    """A new image file -> uint8 [image_size, image_size, 3], exactly as training saw its images.

    Raises `cleaning.BadImageError` for a file that is not a usable image.
    """
    from vitbench.data.cleaning import load_rgb
    from vitbench.data.pipeline import resize_uint8

    rgb, _ = load_rgb(path, max_pixels)
    return resize_uint8(np.asarray(fit_max_side(rgb, max_side)), image_size).numpy()


def transform_record(max_side: int | None, image_size: int | None = None) -> dict[str, Any]:
    """How images were prepared, as stored in data/clean/transform.json and record.json `input`."""
    record: dict[str, Any] = {"decode": "load_rgb (EXIF orientation, alpha on white, RGB)",
                              "max_side": max_side, "downscale": DOWNSCALE, "resize": RESIZE}
    if image_size is not None:
        record["image_size"] = image_size
    return record


def write_transform(folder: Path, max_side: int) -> None:
    write_json(Path(folder) / TRANSFORM_FILE, transform_record(max_side))


def read_transform(clean_dir: Path, image_size: int) -> dict[str, Any]:
    """The transform clean applied (transform.json), completed with the model's input size."""
    path = Path(clean_dir) / TRANSFORM_FILE
    max_side = read_json(path)["max_side"] if path.is_file() else None
    return transform_record(max_side, image_size)


def dhash(img: Image.Image, size: int = DHASH_SIZE) -> str:
    """Perceptual difference hash (64 bits for size 8) as hex: near-identical pictures (another
    JPEG quality, another size) get hashes a few bits apart."""
    gray = np.asarray(img.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS),
                      dtype=np.int16)
    bits = (gray[:, 1:] > gray[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{size * size // 4}x}"
