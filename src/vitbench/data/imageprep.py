"""The one image preparation of the project: what a model sees, in training and in `vitbench predict`.

    decode (`load_rgb`: untrusted bytes, EXIF orientation, alpha on white, any mode to RGB)
    -> downscale so the longest side is at most `clean.max_side` (LANCZOS, aspect kept)
    -> resize to the model's square input (bilinear with antialiasing, `pipeline.resize_uint8`)

`clean` runs the first two steps and stores lossless PNGs, the input pipeline runs the last one on
those PNGs, and `prepare_image` runs all three for a new file, so a 4000-px phone photo reaches a
model exactly as a training image did. Clean records the transform in `data/clean/transform.json`
and every trained model copies it into its record.json (`input`), so a saved model describes its
own input.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vitbench.core.errors import DataError
from vitbench.core.fsutil import read_json, write_json

log = logging.getLogger(__name__)

TRANSFORM_FILE = "transform.json"
DOWNSCALE = "lanczos"
RESIZE = "bilinear antialias"
DHASH_SIZE = 8  # 8x8 = 64-bit difference hash
# Raster formats PIL decodes in-process. EPS (runs Ghostscript), WMF and the scientific stubs are
# deliberately absent: an untrusted file in those formats is reported as `not_image`.
SAFE_FORMATS = ("AVIF", "BMP", "DIB", "GIF", "ICO", "JPEG", "JPEG2000", "PCX", "PNG", "PPM", "PSD",
                "QOI", "SGI", "TGA", "TIFF", "WEBP")
DECODE_REASONS = ("corrupt", "not_image", "decompression_bomb")
WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_PIL_LIMITS = threading.Lock()  # guards PIL's process-wide decoding limits while we change them


class BadImageError(DataError):
    """An image that cannot be used; `reason` is one of DECODE_REASONS or `too_small`."""

    def __init__(self, path: str | Path, reason: str, detail: str) -> None:
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason} ({detail})")


# --- decoding --------------------------------------------------------------------------------

def load_rgb(path: str | Path, max_pixels: int | None = None) -> tuple[Image.Image, str]:
    """Fully decode an untrusted image file into RGB; return it and its original PIL mode.

    EXIF orientation is applied, transparency is composited on white, and palette, grayscale,
    CMYK and 16-bit images are converted. `max_pixels` overrides PIL's decompression-bomb limit
    (PIL's warning threshold counts as a bomb too). Raises BadImageError with reason `corrupt`,
    `not_image` or `decompression_bomb`, or DataError when the file cannot be read at all.
    """
    img = _decode(Path(path), max_pixels)
    return _to_rgb(img), img.mode


def encode_png(img: Image.Image) -> bytes:
    """Lossless PNG bytes with no metadata: identical pixels give identical bytes."""
    if img.info:
        img = img.copy()
        img.info = {}
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


@contextlib.contextmanager
def _strict_decoding(max_pixels: int | None) -> Iterator[None]:
    """Bomb warnings become errors, truncated files fail, and `max_pixels` replaces PIL's limit."""
    with _PIL_LIMITS, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        if max_pixels is not None:
            Image.MAX_IMAGE_PIXELS = max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode(path: Path, max_pixels: int | None) -> Image.Image:
    """Open and fully load the first frame, mapping every decoder failure to a reason."""
    try:
        with _strict_decoding(max_pixels), Image.open(path, formats=SAFE_FORMATS) as img:
            img.load()
            return _apply_orientation(img, path)
    except UnidentifiedImageError as exc:
        raise BadImageError(path, "not_image", f"not a supported image format: {exc}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(path, "decompression_bomb", str(exc)) from exc
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise DataError(f"cannot read image file {path}: {exc}") from exc
    except Exception as exc:  # untrusted bytes: any decoder failure means a broken file
        raise BadImageError(path, "corrupt", f"{type(exc).__name__}: {exc}") from exc


def _apply_orientation(img: Image.Image, path: Path) -> Image.Image:
    """Rotate/flip per the EXIF Orientation tag; a malformed EXIF block is logged and ignored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - the pixels are fine, only the metadata is broken
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", path, exc)
        return img.copy()


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to RGB; transparent pixels become white."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img)
    return img.convert("RGB")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """Scale 16-bit (I;16*), 32-bit integer (I) and float (F) grayscale to 8-bit RGB."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        peak = 65535.0
    else:
        hi = float(arr.max(initial=0.0))
        limits = (1.0, 255.0, 65535.0) if img.mode == "F" else (255.0, 65535.0)
        peak = next((p for p in limits if hi <= p), hi)
    gray = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")


# --- the model input --------------------------------------------------------------------------



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

    Raises `BadImageError` for a file that is not a usable image.
    """
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
