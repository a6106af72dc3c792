"""Safe extraction of untrusted .tar/.tar.gz/.tgz/.zip archives.

Before a byte is written, every entry is checked: absolute paths, `..`, links, devices and FIFOs
are refused (naming the entry), and the number of entries, the total uncompressed size and the
compression ratio, read from the headers, must stay under `dataset.max_entries`,
`dataset.max_extract_mb` and `dataset.max_ratio` (a zip bomb is refused, not extracted). Empty
(0-byte) files are not written but returned, for fetch to report. Tar files are then extracted
through tarfile's `data` filter as a second line of defence; duplicate entries are kept under
unique names and reported, never last-wins.
A tar that stops without its end-of-archive blocks (a copy or download cut at a member boundary,
which tarfile itself reads as a shorter, valid archive) is refused as truncated.
"""

from __future__ import annotations

import errno
import gzip
import lzma
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm import tqdm

from vitbench.core.config import ARCHIVE_SUFFIXES, Dataset
from vitbench.core.errors import FetchError

CHUNK = 1 << 16
MB = 1 << 20


@dataclass(frozen=True)
class ExtractLimits:
    """Refuse archives of more than `max_entries` entries, or that would extract to more than
    `max_mb` MB or expand more than `max_ratio`x."""

    max_mb: int
    max_ratio: float
    max_entries: int

    @classmethod
    def of(cls, cfg: Dataset) -> ExtractLimits:
        """The limits params.yaml sets (dataset.max_extract_mb, max_ratio, max_entries)."""
        return cls(cfg.max_extract_mb, cfg.max_ratio, cfg.max_entries)


@dataclass
class Extracted:
    """What extraction changed: duplicate entries renamed (entry name, the unique name it was
    written under) and the empty files left out (entry names)."""

    renamed: list[tuple[str, str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def safe_extract(archive: Path, dest: Path, limits: ExtractLimits) -> Extracted:
    """Extract a .tar/.tar.gz/.tgz/.zip into `dest`, refusing any entry that could escape it.

    Absolute paths, `..` components, symlinks, hard links, devices and FIFOs raise `FetchError`
    naming the entry, and so does an archive over `limits`; every entry is checked before anything
    is written. A damaged archive raises `FetchError` too. Empty files are not written. Returns the
    duplicate entries renamed and the empty files left out.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FetchError(f"archive not found: {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if tarfile.is_tarfile(archive):  # first: a tar ending in a .zip member looks like a zip
            return _extract_tar(archive, dest, limits)
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, dest, limits)
        raise FetchError(f"{archive} is not a readable archive; expected one of "
                         f"{', '.join(ARCHIVE_SUFFIXES)}")
    except tarfile.FilterError as exc:
        raise FetchError(f"refusing to extract {archive}: {exc}") from exc
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile,
            lzma.LZMAError) as exc:
        raise FetchError(f"broken archive {archive}: {exc}") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full disk is the stage's one-line error (vitbench.core.stage), not a bad archive
        raise FetchError(f"cannot extract {archive}: {exc}") from exc


def _entry_path(archive: Path, name: str) -> PurePosixPath:
    """The checked relative path of an archive entry (backslashes count as separators).

    tarfile's `data` filter would silently strip a leading `/`; a hostile archive is refused here.
    """
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise FetchError(f"refusing to extract {archive}: entry {name!r} has an absolute path")
    path = PurePosixPath(posix)
    if ".." in path.parts:
        raise FetchError(f"refusing to extract {archive}: entry {name!r} points outside the "
                         f"extraction folder ('..')")
    return path


class _Budget:
    """Counts the entries and sums the uncompressed sizes from the headers; refuses as soon as a
    limit is passed."""

    def __init__(self, archive: Path, limits: ExtractLimits) -> None:
        self.archive, self.limits, self.total, self.entries = archive, limits, 0, 0
        self.packed = max(archive.stat().st_size, 1)

    def count(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise FetchError(
                f"refusing to extract {self.archive}: it has more than {self.limits.max_entries} "
                f"entries (dataset.max_entries); raise dataset.max_entries if you trust this "
                f"archive")

    def add(self, size: int) -> None:
        self.total += max(size, 0)
        if self.total > self.limits.max_mb * MB:
            raise FetchError(
                f"refusing to extract {self.archive}: its entries add up to more than "
                f"{self.limits.max_mb} MB uncompressed (dataset.max_extract_mb); raise "
                f"dataset.max_extract_mb if you trust this archive and have the disk space")

    def check_ratio(self) -> None:
        ratio = self.total / self.packed
        if ratio > self.limits.max_ratio:
            raise FetchError(
                f"refusing to extract {self.archive}: {self.packed / MB:.2f} MB would expand to "
                f"{self.total / MB:.1f} MB, a compression ratio of {ratio:.0f} above "
                f"dataset.max_ratio ({self.limits.max_ratio:g}); this looks like a zip bomb. Raise "
                f"dataset.max_ratio if you trust this archive")


class _UniqueNames:
    """Gives a duplicate entry path a free name (`x~2.png`) and records the rename."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.renamed: list[tuple[str, str]] = []

    def __call__(self, rel: PurePosixPath, name: str) -> PurePosixPath:
        key = rel.as_posix()
        if key not in self.taken:
            self.taken.add(key)
            return rel
        k = 2
        while (new := rel.with_name(f"{rel.stem}~{k}{rel.suffix}")).as_posix() in self.taken:
            k += 1
        self.taken.add(new.as_posix())
        self.renamed.append((name, new.as_posix()))
        return new


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


def _check_tar_end(archive: Path, tar: tarfile.TarFile, entries: int) -> None:
    """FetchError unless the headers end with an end-of-archive (all-zero) block.

    tarfile stops quietly at end of file, so a tar cut exactly between two members reads as a
    smaller valid archive; only the missing zero block tells that it was truncated.
    """
    tar.fileobj.seek(tar.offset)
    if tar.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        raise FetchError(f"truncated archive {archive}: it ends after {entries} entr"
                         f"{'y' if entries == 1 else 'ies'} without the end-of-archive blocks, so "
                         f"the copy or download was cut short; fetch it again")


def _extract_tar(archive: Path, dest: Path, limits: ExtractLimits) -> Extracted:
    budget, unique, empty = _Budget(archive, limits), _UniqueNames(), []
    with tarfile.open(archive, "r:*") as tar:
        members = []
        for member in tar:  # headers only; stops at the first refusal, before anything is written
            budget.count()
            rel = _entry_path(archive, member.name)
            _check_tar_type(archive, member)
            if not rel.parts:
                continue
            if member.isfile() and member.size == 0:
                empty.append(member.name)
                continue
            if member.isfile():
                budget.add(member.size)
                rel = unique(rel, member.name)
            members.append(member.replace(name=rel.as_posix(), deep=False))
        _check_tar_end(archive, tar, len(members))
        budget.check_ratio()
        for member in tqdm(members, desc="extract", unit="entry"):
            tar.extract(member, dest, filter="data")
    return Extracted(unique.renamed, empty)


def _extract_zip(archive: Path, dest: Path, limits: ExtractLimits) -> Extracted:
    budget, unique, empty = _Budget(archive, limits), _UniqueNames(), []
    with zipfile.ZipFile(archive) as zf:
        entries: list[tuple[PurePosixPath, bool, Callable[[], BinaryIO]]] = []
        for info in zf.infolist():
            budget.count()
            rel = _entry_path(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise FetchError(f"refusing to extract {archive}: entry {info.filename!r} is a "
                                 f"symbolic link")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise FetchError(f"refusing to extract {archive}: entry {info.filename!r} is not a "
                                 f"regular file or folder")
            if not rel.parts:
                continue
            if not info.is_dir() and info.file_size == 0:
                empty.append(info.filename)
                continue
            if not info.is_dir():
                budget.add(info.file_size)  # zipfile never reads past the header's size
                rel = unique(rel, info.filename)
            entries.append((rel, info.is_dir(), lambda info=info: zf.open(info)))
        budget.check_ratio()
        try:
            _write_entries(dest, entries)
        except RuntimeError as exc:  # encrypted entries
            raise FetchError(f"cannot extract {archive}: {exc}") from exc
    return Extracted(unique.renamed, empty)


def _write_entries(dest: Path, entries: list[tuple[PurePosixPath, bool, Callable[[], BinaryIO]]]
                   ) -> None:
    """Write checked zip entries (relative path, is a folder, opener of its bytes) into dest."""
    root = dest.resolve()
    for rel, is_dir, open_entry in tqdm(entries, desc="extract", unit="entry"):
        target = dest.joinpath(*rel.parts)
        if not target.resolve().is_relative_to(root):  # belt and braces after _entry_path
            raise FetchError(f"refusing to extract entry {str(rel)!r}: it resolves outside {dest}")
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_entry() as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
