"""fetch: bring `dataset.source` into data/raw/<class>/<file>, atomically.

Sources: the embedded synthetic cartoons, scikit-learn's bundled digits, a local folder with one
sub-folder per class, a local archive (.tar, .tar.gz, .tgz, .zip) or an http(s) URL of one. The
tree is built in a temporary sibling of data/raw and renamed into place only when everything
succeeded, so a bad checksum, a broken or malicious archive or an HTTP error raises `FetchError`
and leaves the previous data/raw exactly as it was.

`download()`, `safe_extract()` and `clean_class_name()` are public: other commands reuse them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlparse

import numpy as np
from PIL import Image
from tqdm import tqdm

from vitbench.config import ARCHIVE_SUFFIXES, Dataset
from vitbench.errors import FetchError
from vitbench.fsutil import atomic_dir, sha256_file
from vitbench.paths import Paths

log = logging.getLogger(__name__)

DIGITS_SIZE = 32                 # 8x8 digits upscaled so that clean.min_side=32 keeps them
BACKOFF_SECONDS = 1.0            # first retry delay; doubles on each further retry
CHUNK = 1 << 16
USER_AGENT = "vitbench/0.1 (+https://github.com/vitbench)"
JUNK_NAMES = frozenset({"Thumbs.db", "desktop.ini", "__MACOSX"})
WORDNET_PREFIX = re.compile(r"n\d{8}[-_ ](.+)")
MAX_WRAPPERS = 5                 # how many single wrapper folders are looked through


# --- the stage entry point ------------------------------------------------------------------------

def fetch_dataset(cfg: Dataset, seed: int, paths: Paths) -> dict:
    """Fetch `cfg.source` into `paths.raw` (replacing it only on success); return a summary."""
    kind = cfg.kind
    if cfg.sha256 and kind not in ("archive", "url"):
        log.warning("dataset.sha256 is set but dataset.source %r is not an archive; it is not checked",
                    cfg.source)
    with atomic_dir(paths.raw) as tmp:
        details = _FETCHERS[kind](cfg, seed, paths, tmp)
        summary = {"source": cfg.source, "kind": kind, **_tree_counts(tmp), **details}
    counts = ", ".join(f"{cls} {n}" for cls, n in summary["counts"].items())
    log.info("fetched %d files in %d classes from %s into %s: %s", summary["files"],
             len(summary["classes"]), cfg.source, paths.raw, counts)
    return summary


def _fetch_synthetic(cfg: Dataset, seed: int, paths: Paths, dest: Path) -> dict:
    from vitbench.data.synthetic import generate

    return {"synthetic": generate(dest, cfg.synthetic.per_class, cfg.synthetic.image_size, seed)}


def _fetch_digits(cfg: Dataset, seed: int, paths: Paths, dest: Path) -> dict:
    write_digits(dest)
    return {}


def _fetch_folder(cfg: Dataset, seed: int, paths: Paths, dest: Path) -> dict:
    return import_folder(Path(cfg.source).expanduser(), dest)


def _fetch_archive(cfg: Dataset, seed: int, paths: Paths, dest: Path) -> dict:
    archive = Path(cfg.source).expanduser()
    if not archive.is_file():
        raise FetchError(f"dataset archive not found: {archive}")
    if cfg.sha256:
        _verify_sha256(archive, cfg.sha256, what=str(archive))
    return _import_archive(archive, dest)


def _fetch_url(cfg: Dataset, seed: int, paths: Paths, dest: Path) -> dict:
    archive = download(cfg.source, paths.downloads, cfg.sha256)
    try:
        return _import_archive(archive, dest)
    except FetchError as exc:
        archive.unlink(missing_ok=True)
        raise FetchError(f"{exc} (the download was removed from the cache {paths.downloads})") from exc


_FETCHERS: dict[str, Callable[[Dataset, int, Paths, Path], dict]] = {
    "synthetic": _fetch_synthetic, "digits": _fetch_digits, "folder": _fetch_folder,
    "archive": _fetch_archive, "url": _fetch_url,
}


def _tree_counts(root: Path) -> dict:
    """Classes (sorted), files per class and the total of a class-per-folder tree."""
    counts = {d.name: sum(1 for f in d.iterdir() if f.is_file())
              for d in sorted(root.iterdir()) if d.is_dir()}
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


# --- a folder of class folders ------------------------------------------------------------------------

def clean_class_name(name: str) -> str:
    """A class folder's name without its WordNet id: `n02085620-Chihuahua` -> `Chihuahua`."""
    name = name.strip()
    match = WORDNET_PREFIX.fullmatch(name)
    return match.group(1).strip() if match and match.group(1).strip() else name


def import_folder(source: Path, dest: Path, *, move: bool = False) -> dict:
    """Copy (or move) `source/<class>/**/<file>` into `dest/<clean class>/<file>`.

    One chain of single wrapper folders (Stanford Dogs' `Images/`) is looked through; hidden and
    system files are skipped, and so are files that are not inside a class folder (counted and
    logged). Returns the skipped counts.
    """
    if not Path(source).is_dir():
        raise FetchError(f"dataset folder not found: {source}")
    root, skipped_root = _class_root(Path(source))
    class_dirs = _visible(root, dirs=True)
    if not class_dirs:
        raise FetchError(
            f"no class folders in {source}: expected one sub-folder per class with the images "
            f"inside, e.g. {Path(source) / 'cat' / '001.jpg'} and {Path(source) / 'dog' / '002.jpg'} "
            f"(optionally inside a single wrapper folder such as Images/)")
    if skipped_root:
        log.warning("skipped %d file(s) in %s that are not inside a class folder", skipped_root, root)
    names = _class_names(class_dirs)
    jobs, hidden = _collect_files(class_dirs, names, dest)
    transfer = os.replace if move else shutil.copyfile
    for src, target in tqdm(jobs, desc="import", unit="file"):
        target.parent.mkdir(parents=True, exist_ok=True)
        transfer(src, target)
    if hidden:
        log.info("skipped %d hidden or system file(s) such as .DS_Store", hidden)
    return {"skipped": {"outside_class_folders": skipped_root, "hidden": hidden}}


def _visible(folder: Path, *, dirs: bool) -> list[Path]:
    """The non-hidden, non-system sub-folders (dirs=True) or files (dirs=False) of `folder`."""
    return sorted(p for p in folder.iterdir()
                  if not _is_hidden(p.name) and (p.is_dir() if dirs else p.is_file()))


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in JUNK_NAMES


def _class_root(source: Path) -> tuple[Path, int]:
    """Look through single wrapper folders; return the folder holding the class folders and the
    number of loose files met on the way (they belong to no class)."""
    root, loose = source, 0
    for _ in range(MAX_WRAPPERS):
        dirs = _visible(root, dirs=True)
        if len(dirs) != 1 or not _visible(dirs[0], dirs=True):
            break
        loose += len(_visible(root, dirs=False))
        log.info("looking through the wrapper folder %s", dirs[0])
        root = dirs[0]
    return root, loose + len(_visible(root, dirs=False))


def _class_names(class_dirs: list[Path]) -> dict[Path, str]:
    """Cleaned class names; folders whose cleaned names would collide keep their own names."""
    cleaned = {d: clean_class_name(d.name) for d in class_dirs}
    taken: dict[str, int] = {}
    for name in cleaned.values():
        taken[name] = taken.get(name, 0) + 1
    clashes = sorted(d.name for d, n in cleaned.items() if taken[n] > 1)
    if clashes:
        log.warning("class folders %s would share a name once cleaned; keeping their full names",
                    ", ".join(clashes))
    return {d: (n if taken[n] == 1 else d.name) for d, n in cleaned.items()}


def _collect_files(class_dirs: list[Path], names: dict[Path, str], dest: Path
                   ) -> tuple[list[tuple[Path, Path]], int]:
    """(source, target) pairs for every visible file under each class folder, and the hidden count.

    Files in nested sub-folders are flattened into the class folder as `sub__file.jpg`.
    """
    jobs: list[tuple[Path, Path]] = []
    hidden = 0
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        kept = [p for p in files if not any(_is_hidden(part) for part in p.relative_to(class_dir).parts)]
        hidden += len(files) - len(kept)
        if not kept:
            log.warning("class folder %s holds no files; skipped", class_dir)
        for path in kept:
            flat = "__".join(path.relative_to(class_dir).parts)
            jobs.append((path, dest / names[class_dir] / flat))
    return jobs, hidden


# --- archives --------------------------------------------------------------------------------------------

def _import_archive(archive: Path, dest: Path) -> dict:
    """Extract `archive` safely next to `dest`, then move its class folders into `dest`."""
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=dest.parent) as work:
        safe_extract(archive, Path(work))
        return import_folder(Path(work), dest, move=True)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a .tar/.tar.gz/.tgz/.zip into `dest`, refusing any entry that could escape it.

    Absolute paths, `..` components, symlinks, hard links, devices and FIFOs raise `FetchError`
    naming the entry; every entry is checked before anything is written. A damaged archive raises
    `FetchError` too.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FetchError(f"archive not found: {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if tarfile.is_tarfile(archive):  # first: a tar ending in a .zip member looks like a zip
            _extract_tar(archive, dest)
        elif zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        else:
            raise FetchError(f"{archive} is not a readable archive; expected one of "
                             f"{', '.join(ARCHIVE_SUFFIXES)}")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile,
            lzma.LZMAError) as exc:
        raise FetchError(f"broken archive {archive}: {exc}") from exc
    except OSError as exc:
        raise FetchError(f"cannot extract {archive}: {exc}") from exc


def _entry_path(archive: Path, name: str) -> PurePosixPath:
    """The checked relative path of an archive entry (backslashes count as separators)."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise FetchError(f"refusing to extract {archive}: entry {name!r} has an absolute path")
    path = PurePosixPath(posix)
    if ".." in path.parts:
        raise FetchError(f"refusing to extract {archive}: entry {name!r} points outside the "
                         f"extraction folder ('..')")
    return path


def _target(dest: Path, rel: PurePosixPath) -> Path:
    """`dest / rel`, asserted to stay inside `dest` (belt and braces after `_entry_path`)."""
    target = dest.joinpath(*rel.parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise FetchError(f"refusing to extract entry {str(rel)!r}: it resolves outside {dest}")
    return target


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        checked = [(m, _entry_path(archive, m.name)) for m in tar.getmembers()]
        for member, _ in checked:
            _check_tar_type(archive, member)

        def opener(member: tarfile.TarInfo) -> Callable[[], BinaryIO]:
            def open_member() -> BinaryIO:
                source = tar.extractfile(member)
                if source is None:
                    raise FetchError(f"broken archive {archive}: no data for entry {member.name!r}")
                return source
            return open_member

        _write_entries(dest, [(rel, m.isdir(), opener(m)) for m, rel in checked])


def _write_entries(dest: Path, entries: list[tuple[PurePosixPath, bool, Callable[[], BinaryIO]]]
                   ) -> None:
    """Write checked archive entries (relative path, is a folder, opener of its bytes) into dest."""
    for rel, is_dir, open_entry in tqdm(entries, desc="extract", unit="entry"):
        if not rel.parts:
            continue
        target = _target(dest, rel)
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_entry() as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)


def _check_tar_type(archive: Path, member: tarfile.TarInfo) -> None:
    """Only regular files and folders may be extracted."""
    if member.issym() or member.islnk():
        kind = "a symbolic link" if member.issym() else "a hard link"
        raise FetchError(f"refusing to extract {archive}: entry {member.name!r} is {kind} "
                         f"(to {member.linkname!r})")
    if member.ischr() or member.isblk() or member.isfifo():
        raise FetchError(f"refusing to extract {archive}: entry {member.name!r} is a device or FIFO")
    if not (member.isfile() or member.isdir()):
        raise FetchError(f"refusing to extract {archive}: entry {member.name!r} has an "
                         f"unsupported type {member.type!r}")


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        checked = [(info, _entry_path(archive, info.filename)) for info in infos]
        for info, _ in checked:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise FetchError(f"refusing to extract {archive}: entry {info.filename!r} is a "
                                 f"symbolic link")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise FetchError(f"refusing to extract {archive}: entry {info.filename!r} is not a "
                                 f"regular file or folder")
        try:
            _write_entries(dest, [(rel, info.is_dir(), lambda info=info: zf.open(info))
                                  for info, rel in checked])
        except RuntimeError as exc:  # encrypted entries
            raise FetchError(f"cannot extract {archive}: {exc}") from exc


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
