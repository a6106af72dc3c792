"""The `clean` stage: decode every raw image, convert it to RGB, reject bad ones with a reason,
deduplicate by content, bound its size and write data/clean plus its manifest and metrics.

Decoding untrusted images (`load_rgb`, `BadImageError`) and the PNG encoder live in
`vitbench.data.imageprep`, which `vitbench predict` and the training input share; they are
re-exported here.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from vitbench.core import config
from vitbench.data.imageprep import (BadImageError, dhash, encode_png, fit_max_side, load_rgb,
                                     write_transform)
from vitbench.data.manifest import write_manifest
from vitbench.core.errors import DataError, short_list
from vitbench.core.fsutil import atomic_dir, atomic_file, write_json
from vitbench.core.paths import Paths

log = logging.getLogger(__name__)

REMOVED_REASONS = ("corrupt", "not_image", "too_small", "duplicate", "decompression_bomb",
                   "label_conflict")
CONVERTED_KINDS = ("rgba", "palette", "grayscale", "cmyk", "la", "16bit", "other")
MANIFEST_COLUMNS = ("path", "class", "sha256", "width", "height", "mode", "source", "dhash")
REJECTED_COLUMNS = ("source", "class", "reason", "detail")
REJECTED_CSV = "clean_rejected.csv"
CLASSES_CSV = "clean_classes.csv"  # per-class detail, kept out of the flat metrics/clean.json

_MODE_KIND = {"RGBA": "rgba", "RGBa": "rgba", "P": "palette", "PA": "palette", "L": "grayscale",
              "1": "grayscale", "CMYK": "cmyk", "LA": "la", "La": "la", "I": "16bit"}


# --- decoding (vitbench.data.imageprep) and conversion metrics --------------------------------

def conversion_kind(mode: str) -> str | None:
    """The `converted` metric key for an original PIL mode (None for plain RGB)."""
    if mode == "RGB":
        return None
    if mode.startswith("I;16"):
        return "16bit"
    return _MODE_KIND.get(mode, "other")


def _fit(img: Image.Image, path: Path, cfg: config.Clean) -> Image.Image:
    """Downscale so the longest side is at most max_side (imageprep.fit_max_side, LANCZOS);
    reject a short side < min_side."""
    fitted = fit_max_side(img, cfg.max_side)
    if min(fitted.size) < cfg.min_side:
        (w, h), size = img.size, fitted.size
        after = f", {size[0]}x{size[1]} after downscaling" if size != img.size else ""
        raise BadImageError(path, "too_small",
                            f"{w}x{h}{after}; shortest side must be >= clean.min_side ({cfg.min_side})")
    return fitted


# --- the stage -------------------------------------------------------------------------------

@dataclass
class _Item:
    """One raw file that decoded: its clean PNG is already written at `png`."""

    source: str
    cls: str
    sha256: str
    width: int
    height: int
    mode: str
    png: Path
    dhash: str


@dataclass(frozen=True)
class _Rejected:
    source: str
    cls: str
    reason: str
    detail: str


def clean_dataset(cfg: config.Clean, paths: Paths, *, max_pixels: int | None = None) -> dict:
    """Clean data/raw into data/clean (+ manifest.csv), metrics/clean.json and clean_rejected.csv.

    A class left with fewer than `cfg.min_per_class` images raises DataError before any output is
    replaced. Returns the metrics dict.
    """
    files = scan_raw(paths.raw)
    classes = sorted({cls for cls, _ in files})
    with atomic_dir(paths.clean) as tmp:
        items, rejected = _process(files, paths.raw, tmp, cfg, max_pixels)
        kept, dropped = _resolve_duplicates(items)
        rejected += dropped
        _check_min_per_class(classes, kept, rejected, cfg.min_per_class)
        _check_two_classes(kept)
        for item in _dropped_items(items, kept):
            item.png.unlink(missing_ok=True)
        write_manifest(_manifest_frame(kept), tmp / "manifest.csv")
        write_transform(tmp, cfg.max_side)
    metrics = _metrics(kept, rejected)
    _write_rejected(rejected, paths.metrics / REJECTED_CSV)
    _write_classes(classes, kept, rejected, paths.metrics / CLASSES_CSV)
    write_json(paths.metrics_json("clean"), metrics)
    log.info("clean: kept %d, removed %s", metrics["kept"],
             {k: v for k, v in metrics["removed"].items() if v} or "none")
    return metrics


def scan_raw(raw: Path) -> list[tuple[str, Path]]:
    """(class, file) for every file under data/raw/<class>/, in a deterministic order."""
    if not raw.is_dir():
        raise DataError(f"{raw} does not exist (run the fetch stage first: `dvc repro fetch`)")
    files: list[tuple[str, Path]] = []
    for entry in sorted(raw.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            log.warning("ignoring %s: not inside a class folder", entry)
            continue
        files += [(entry.name, f) for f in sorted(entry.rglob("*")) if f.is_file()]
    if not files:
        raise DataError(f"{raw} holds no images: expected {raw}/<class>/<image files>")
    return files


def _process(files: list[tuple[str, Path]], raw: Path, out: Path, cfg: config.Clean,
             max_pixels: int | None) -> tuple[list[_Item], list[_Rejected]]:
    """Decode, convert, bound and write each file; collect what was rejected and why."""
    items: list[_Item] = []
    rejected: list[_Rejected] = []
    for cls, path in tqdm(files, desc="clean", unit="img"):
        source = path.relative_to(raw).as_posix()
        try:
            img, mode = load_rgb(path, max_pixels)
            img = _fit(img, path, cfg)
        except BadImageError as exc:
            log.debug("rejected %s: %s", source, exc)
            rejected.append(_Rejected(source, cls, exc.reason, exc.detail))
            continue
        data = encode_png(img)
        sha = hashlib.sha256(data).hexdigest()
        png = out / cls / f"{sha[:16]}.png"
        if not png.exists():
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(data)
        items.append(_Item(source, cls, sha, img.width, img.height, mode, png, dhash(img)))
    return items, rejected


def _resolve_duplicates(items: list[_Item]) -> tuple[list[_Item], list[_Rejected]]:
    """Keep the first of each identical image; one image under several classes drops every copy."""
    by_sha: dict[str, list[_Item]] = defaultdict(list)
    for item in items:
        by_sha[item.sha256].append(item)
    kept: list[_Item] = []
    dropped: list[_Rejected] = []
    for copies in by_sha.values():
        classes = sorted({c.cls for c in copies})
        if len(classes) > 1:
            log.warning("label conflict: the same image is %s; dropping all %d copies",
                        " and ".join(f"{c.source} (class {c.cls})" for c in copies), len(copies))
            detail = f"same image under classes {', '.join(classes)}"
            dropped += [_Rejected(c.source, c.cls, "label_conflict", detail) for c in copies]
            continue
        kept.append(copies[0])
        dropped += [_Rejected(c.source, c.cls, "duplicate", f"same pixels as {copies[0].source}")
                    for c in copies[1:]]
    return kept, dropped


def _dropped_items(items: list[_Item], kept: list[_Item]) -> list[_Item]:
    """Items whose written PNG no kept item uses (the label conflicts)."""
    used = {k.png for k in kept}
    return [i for i in items if i.png not in used]


def _check_min_per_class(classes: list[str], kept: list[_Item], rejected: list[_Rejected],
                         minimum: int) -> None:
    kept_n = Counter(k.cls for k in kept)
    short = [c for c in classes if kept_n[c] < minimum]
    if not short:
        return
    reasons: dict[str, Counter] = defaultdict(Counter)
    for r in rejected:
        reasons[r.cls][r.reason] += 1
    lines = []
    for c in short:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons[c].items())) or "none removed"
        lines.append(f"'{c}' kept {kept_n[c]} of {kept_n[c] + sum(reasons[c].values())} ({why})")
    raise DataError(f"{len(short)} class(es) have fewer than clean.min_per_class ({minimum}) "
                    f"usable images: {short_list(lines, sep='; ')}. Add images, or lower "
                    f"clean.min_per_class (every class: {CLASSES_CSV} after a successful run, "
                    f"the log with -v)")


def _check_two_classes(kept: list[_Item]) -> None:
    """A classifier needs two classes: a dataset left with one is an error that names it."""
    counts = Counter(k.cls for k in kept)
    if len(counts) < 2:
        (cls, n), = counts.items()
        raise DataError(f"only one class is left after cleaning: '{cls}' ({n} images); a "
                        f"classifier needs at least two. Check dataset.source: it should hold one "
                        f"folder per class")


def _manifest_frame(kept: list[_Item]) -> pd.DataFrame:
    rows = sorted(kept, key=lambda k: (k.cls, k.source))
    return pd.DataFrame(
        [(str(k.png), k.cls, k.sha256, k.width, k.height, k.mode, k.source, k.dhash) for k in rows],
        columns=list(MANIFEST_COLUMNS))


def _metrics(kept: list[_Item], rejected: list[_Rejected]) -> dict:
    """metrics/clean.json: few flat keys for `dvc metrics show`, every key present, zeros included.
    The per-class detail is metrics/clean_classes.csv."""
    removed = Counter(r.reason for r in rejected)
    converted = Counter(conversion_kind(k.mode) for k in kept)
    return {
        "kept": len(kept),
        "classes": len({k.cls for k in kept}),
        "removed": {reason: removed[reason] for reason in REMOVED_REASONS},
        "converted": {kind: converted[kind] for kind in CONVERTED_KINDS},
    }


def _write_classes(classes: list[str], kept: list[_Item], rejected: list[_Rejected], csv: Path) -> None:
    """metrics/clean_classes.csv: class, kept, removed (all reasons)."""
    kept_n, removed_n = Counter(k.cls for k in kept), Counter(r.cls for r in rejected)
    df = pd.DataFrame([(c, kept_n[c], removed_n[c]) for c in classes],
                      columns=["class", "kept", "removed"])
    with atomic_file(csv) as fh:
        df.to_csv(fh, index=False)


def _write_rejected(rejected: list[_Rejected], csv: Path) -> None:
    rows = sorted(rejected, key=lambda r: (r.cls, r.source))
    df = pd.DataFrame([(r.source, r.cls, r.reason, r.detail) for r in rows],
                      columns=list(REJECTED_COLUMNS))
    with atomic_file(csv) as fh:
        df.to_csv(fh, index=False)
