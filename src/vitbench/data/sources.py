"""fetch: bring `dataset.source` into data/raw/<class>/<file>, atomically.

Sources: the embedded synthetic cartoons, scikit-learn's bundled digits, a local folder with one
sub-folder per class, a local archive (.tar, .tar.gz, .tgz, .zip) or an http(s) URL of one. The
tree is built in a temporary sibling of data/raw and renamed into place only when everything
succeeded, so a missing source, a bad checksum, a broken or malicious archive or an HTTP error
raises and leaves the previous data/raw exactly as it was. What was skipped or renamed on the way
is counted in metrics/fetch.json and listed in metrics/fetch_rejected.csv.

`download()`, `safe_extract()` and `clean_class_name()` are public: other commands reuse them.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlparse

import numpy as np
from PIL import Image
from tqdm import tqdm

from vitbench.config import ARCHIVE_SUFFIXES, Dataset
from vitbench.data.archives import ExtractLimits, safe_extract
from vitbench.data.fetch_report import FetchReport
from vitbench.data.folders import NO_CLASS, clean_class_name, import_folder
from vitbench.errors import ConfigError, FetchError
from vitbench.fsutil import atomic_dir, sha256_file
from vitbench.paths import Paths

__all__ = ["clean_class_name", "download", "fetch_dataset", "import_folder", "safe_extract",
           "write_digits"]

log = logging.getLogger(__name__)

DIGITS_SIZE = 32                 # 8x8 digits upscaled so that clean.min_side=32 keeps them
BACKOFF_SECONDS = 1.0            # first retry delay; doubles on each further retry
CHUNK = 1 << 16
USER_AGENT = "vitbench/0.1 (+https://github.com/vitbench)"
REJECTED_CSV = "fetch_rejected.csv"


# --- the stage entry point ------------------------------------------------------------------------

def fetch_dataset(cfg: Dataset, seed: int, paths: Paths) -> dict:
    """Fetch `cfg.source` into `paths.raw` (replacing it only on success), write
    metrics/fetch.json and metrics/fetch_rejected.csv; return a summary."""
    kind = cfg.kind
    check_source(cfg)
    if cfg.sha256 and kind not in ("archive", "url"):
        log.warning("dataset.sha256 is set but dataset.source %r is not an archive; it is not checked",
                    cfg.source)
    _remove_legacy_extract_folders(paths.raw.parent)
    report = FetchReport()
    with atomic_dir(paths.raw) as tmp:
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


def check_source(cfg: Dataset) -> None:
    """ConfigError when a local dataset.source does not exist or has the wrong kind."""
    if cfg.kind not in ("folder", "archive"):
        return
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise ConfigError(
            "dataset.source", cfg.source,
            "synthetic, digits, an existing folder, an existing archive "
            f"({', '.join(ARCHIVE_SUFFIXES)}) or an http(s) URL; that path does not exist")
    if cfg.kind == "folder" and not path.is_dir():
        raise ConfigError("dataset.source", cfg.source,
                          f"a folder of class folders or an archive ending in {', '.join(ARCHIVE_SUFFIXES)}")
    if cfg.kind == "archive" and not path.is_file():
        raise ConfigError("dataset.source", cfg.source, "an archive file; that path is a folder")


def _remove_legacy_extract_folders(data: Path) -> None:
    """`data/.extract-*` folders that versions before the pid-stamped temps left after a kill."""
    if data.is_dir():
        for stale in data.glob(".extract-*"):
            log.info("removing the stale extraction folder %s of an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)


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
        _verify_sha256(archive, cfg.sha256, what=str(archive))
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
        for name, new in safe_extract(archive, work, ExtractLimits.of(cfg)):
            report.add(name, NO_CLASS, "duplicate_entry", f"entry appears more than once in "
                       f"{archive.name}; this copy stored as {new!r}")
        import_folder(work, dest, report, move=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- downloads --------------------------------------------------------------------------------------------

class _Retryable(Exception):
    """A download failure worth another attempt: a connection problem or an HTTP 5xx."""


def download(url: str, cache_dir: Path, sha256: str | None = None, *, retries: int = 3,
             timeout: float = 30) -> Path:
    """Download `url` into `cache_dir` once and return the cached file.

    A file already cached for this URL (and matching `sha256` when given) is reused without any
    network access. Connection errors and HTTP 5xx are retried `retries` times with exponential
    backoff; HTTP 4xx fails at once. The file is written to a temporary name and renamed only when
    complete and, if `sha256` is given, verified; a mismatch raises `FetchError` and keeps nothing.
    """
    if urlparse(url).scheme not in ("http", "https"):
        raise FetchError(f"not an http(s) URL: {url}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / _cache_name(url)
    if target.is_file():
        if sha256 is None or sha256_file(target) == sha256.lower():
            log.info("using the cached download %s", target)
            return target
        log.warning("cached %s does not match the expected sha256; downloading again", target)
        target.unlink()
    part = _download_with_retries(url, cache_dir, target.name, retries, timeout)
    try:
        if sha256:
            _verify_sha256(part, sha256, what=url)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    log.info("downloaded %s to %s", url, target)
    return target


def _cache_name(url: str) -> str:
    """A file name unique to the URL that still shows the original name."""
    base = PurePosixPath(urlparse(url).path).name or "download"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"


def _verify_sha256(path: Path, expected: str, *, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise FetchError(f"checksum mismatch for {what}: expected sha256 {expected.lower()}, "
                         f"got {actual} (dataset.sha256)")


def _download_with_retries(url: str, cache_dir: Path, name: str, retries: int, timeout: float) -> Path:
    for attempt in range(retries + 1):
        try:
            return _download_once(url, cache_dir, name, timeout)
        except _Retryable as exc:
            if attempt == retries:
                raise FetchError(f"download failed after {retries + 1} attempt(s): {url}: {exc}") from exc
            delay = BACKOFF_SECONDS * 2 ** attempt
            log.warning("download of %s failed (%s); retry %d/%d in %.1fs", url, exc, attempt + 1,
                        retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def _download_once(url: str, cache_dir: Path, name: str, timeout: float) -> Path:
    """One attempt: stream `url` into a temporary file in `cache_dir` and return its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.part-", dir=cache_dir)
    part = Path(tmp)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = _stream(response, out, total, name)
        if total is not None and received < total:
            raise _Retryable(f"connection closed after {received} of {total} bytes")
        return part
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        exc.close()
        if exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise FetchError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        raise _Retryable(str(getattr(exc, "reason", exc)) or type(exc).__name__) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _stream(response: http.client.HTTPResponse, out: BinaryIO, total: int | None, name: str) -> int:
    """Copy the response body to `out` with a byte progress bar; return the bytes received."""
    received = 0
    with tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024) as bar:
        while block := response.read(CHUNK):
            out.write(block)
            received += len(block)
            bar.update(len(block))
    return received
