"""fetch: bring `dataset.source` into data/raw/<class>/<file>, atomically.

Sources: the embedded synthetic cartoons, scikit-learn's bundled digits, a local folder with one
sub-folder per class, a local archive (.tar, .tar.gz, .tgz, .zip) or an http(s) URL of one. The
tree is built in a temporary sibling of data/raw and renamed into place only when everything
succeeded, so a missing source, a bad checksum, a broken or malicious archive or an HTTP error
raises and leaves the previous data/raw exactly as it was. What was skipped or renamed on the way
is counted in metrics/fetch.json and listed in metrics/fetch_rejected.csv.

`safe_extract()` and `clean_class_name()` are public: other commands reuse them; `download()`
(`vitbench.core.download`: requests + urllib3 Retry, cached, verified) is re-exported here.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vitbench.core.config import Dataset
from vitbench.data.archives import ExtractLimits, safe_extract
from vitbench.data.fetch_report import REJECTED_CSV, FetchReport
from vitbench.data.folders import NO_CLASS, clean_class_name, import_folder
from vitbench.data.source_checks import check_source
from vitbench.core.download import download, verify_sha256
from vitbench.core.errors import FetchError
from vitbench.core.fsutil import atomic_dir, tree_bytes
from vitbench.core.paths import Paths

__all__ = ["clean_class_name", "download", "fetch_dataset", "import_folder", "safe_extract",
           "write_digits"]

log = logging.getLogger(__name__)

DIGITS_SIZE = 32                 # 8x8 digits upscaled so that clean.min_side=32 keeps them


# --- the stage entry point ------------------------------------------------------------------------

def fetch_dataset(cfg: Dataset, seed: int, paths: Paths) -> dict:
    """Fetch `cfg.source` into `paths.raw` (replacing it only on success), write
    metrics/fetch.json and metrics/fetch_rejected.csv; return a summary."""
    kind = cfg.kind
    check_source(cfg, paths)
    if cfg.sha256 and kind not in ("archive", "url"):
        log.warning("dataset.sha256 is set but dataset.source %r is not an archive; it is not checked",
                    cfg.source)
    report = FetchReport()
    with atomic_dir(paths.raw, _source_bytes(cfg)) as tmp:
        details = _FETCHERS[kind](cfg, seed, paths, tmp, report)
        summary = {"source": cfg.source, "kind": kind, **_tree_counts(tmp), **details}
    summary["report"] = report.write(paths.metrics_json("fetch"), paths.metrics / REJECTED_CSV,
                                     summary["files"], len(summary["classes"]))
    report.log_summary()
    counts = ", ".join(f"{cls} {n}" for cls, n in summary["counts"].items())
    log.info("fetched %d files in %d classes from %s into %s: %s", summary["files"],
             len(summary["classes"]), cfg.source, paths.raw,
             counts if len(counts) < 500 else counts[:500] + "...")
    return summary


def _source_bytes(cfg: Dataset) -> int | None:
    """About what data/raw will take: a local source's size; None (unknown) for the others."""
    return tree_bytes(Path(cfg.source).expanduser()) if cfg.kind in ("folder", "archive") else None


def _fetch_synthetic(cfg: Dataset, seed: int, paths: Paths, dest: Path, report: FetchReport) -> dict:
    from vitbench.data.synthetic import generate

    return {"synthetic": generate(dest, cfg.synthetic.per_class, cfg.synthetic.image_size, seed)}


def _fetch_digits(cfg: Dataset, seed: int, paths: Paths, dest: Path, report: FetchReport) -> dict:
    write_digits(dest)
    return {}


def _fetch_folder(cfg: Dataset, seed: int, paths: Paths, dest: Path, report: FetchReport) -> dict:
    import_folder(Path(cfg.source).expanduser(), dest, report)
    return {}


def _fetch_archive(cfg: Dataset, seed: int, paths: Paths, dest: Path, report: FetchReport) -> dict:
    archive = Path(cfg.source).expanduser()
    if cfg.sha256:
        verify_sha256(archive, cfg.sha256, what=str(archive))
    _import_archive(archive, dest, cfg, report)
    return {}


def _fetch_url(cfg: Dataset, seed: int, paths: Paths, dest: Path, report: FetchReport) -> dict:
    archive = download(cfg.source, paths.downloads, cfg.sha256)
    try:
        _import_archive(archive, dest, cfg, report)
    except FetchError as exc:
        archive.unlink(missing_ok=True)
        raise FetchError(f"{exc} (the download was removed from the cache {paths.downloads})") from exc
    return {}


_FETCHERS: dict[str, Callable[[Dataset, int, Paths, Path, FetchReport], dict]] = {
    "synthetic": _fetch_synthetic, "digits": _fetch_digits, "folder": _fetch_folder,
    "archive": _fetch_archive, "url": _fetch_url,
}


def _tree_counts(root: Path) -> dict:
    """Classes (sorted), files per class and the total of a class-per-folder tree."""
    counts = {d.name: sum(1 for f in d.iterdir() if f.is_file())
              for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    return {"classes": list(counts), "counts": counts, "files": sum(counts.values())}


# --- scikit-learn digits ----------------------------------------------------------------------------

def write_digits(dest: Path, size: int = DIGITS_SIZE) -> None:
    """Write scikit-learn's bundled 8x8 digits as `size`x`size` grayscale PNGs in `dest/<digit>/`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, target) in enumerate(tqdm(zip(digits.images, digits.target), desc="digits",
                                              total=len(digits.target), unit="img")):
        folder = Path(dest) / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        gray = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)
        image = Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR)
        image.save(folder / f"digit_{i:04d}.png")


# --- archives --------------------------------------------------------------------------------------------

def _import_archive(archive: Path, dest: Path, cfg: Dataset, report: FetchReport) -> None:
    """Extract `archive` into a hidden work folder inside `dest`, then move its class folders up.

    The work folder lives inside the temporary data/raw, so an interrupted run leaves nothing
    that the next run's stale-temp cleanup would not remove.
    """
    work = dest / ".extract"
    try:
        extracted = safe_extract(archive, work, ExtractLimits.of(cfg))
        for name, new in extracted.renamed:
            report.add(name, NO_CLASS, "duplicate_entry", f"entry appears more than once in "
                       f"{archive.name}; this copy stored as {new!r}")
        for name in extracted.empty:
            report.add(name, NO_CLASS, "empty_file", f"an empty (0-byte) file in {archive.name}; "
                       f"not extracted")
        import_folder(work, dest, report, move=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
