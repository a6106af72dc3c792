"""Atomic outputs: build in a temporary sibling, rename into place only on success.

A failed stage therefore leaves the previous output exactly as it was (dvc.yaml declares every
output `persist: true`, so DVC does not delete it first either). Temporary siblings carry the
writer's pid (`.<name>.tmp-p<pid>-*`); the next writer of the same output removes those whose
process is gone (a SIGKILL'd run), see `remove_stale_temps`. A full disk while an output is
written removes the partial temp and raises `DiskFullError`: the output, the free space left and
about how much the output needs (or, when a file-size limit stopped the write, that limit).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vitbench.core.errors import VitbenchError

log = logging.getLogger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file-size limit (ulimit -f)
MB = 1 << 20


class DiskFullError(VitbenchError):
    """No space was left on the device while an output was written; its temp was removed."""


@contextlib.contextmanager
def atomic_dir(target: str | Path, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `target` when the block succeeds.

    `expected_bytes` (about what the finished output takes; default: the size of the output it
    replaces) only sizes the message of a `DiskFullError`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; an output folder gets the usual mode
    try:
        yield tmp
    except BaseException as exc:
        written = tree_bytes(tmp) if is_disk_full(exc) else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            expected = expected_bytes if expected_bytes is not None else tree_bytes(target)
            raise disk_full(exc, target, max(expected, written)) from exc
        raise
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-p{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling for writing; rename it over `target` when the block succeeds."""
    with atomic_path(target) as tmp, open(tmp, mode) as fh:
        yield fh


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """The path of a new, empty temporary sibling (ending `suffix`, for writers that check the
    name) that replaces `target` when the block succeeds; removed when it fails."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix, dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        written = tree_bytes(tmp) if is_disk_full(exc) else 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full(exc, target, max(written, tree_bytes(target))) from exc
        raise


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` is the OSError of a full disk (or of an exhausted quota or file-size limit)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def disk_full(exc: OSError, output: str | Path, needed: int = 0) -> DiskFullError:
    """The one-line error of a full disk while `output` was written: the output (and the file the
    write failed on), the space free now and about how much the output needs."""
    output = Path(output)
    failed = f" (at {exc.filename})" if exc.filename and str(exc.filename) != str(output) else ""
    if exc.errno == errno.EFBIG:
        return DiskFullError(f"a file grew past the file-size limit of this process "
                             f"({_file_size_limit()}) while writing {output}{failed}: raise the "
                             "limit (`ulimit -f unlimited`) and re-run")
    free = shutil.disk_usage(_existing_parent(output)).free
    need = f", the output needs about {_mb(needed)}" if needed else ""
    short = f"; free at least {_mb(needed - free)} and re-run" if needed > free else \
        "; free some space and re-run"
    return DiskFullError(f"no space left on the device while writing {output}{failed}: "
                         f"{_mb(free)} free there{need}{short}")


def _file_size_limit() -> str:
    """The soft RLIMIT_FSIZE for a person: `ulimit -f` = 64 KB."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return "none" if soft == resource.RLIM_INFINITY else f"ulimit -f = {_mb(soft)}"


def tree_bytes(path: str | Path) -> int:
    """The bytes of the files under `path` (or of the file `path`); 0 when it does not exist."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mb(n: int) -> str:
    """Bytes for a person: `12.3 MB`, `40 KB`, `512 bytes`."""
    if n >= MB // 10:
        return f"{n / MB:.1f} MB"
    return f"{n / 1024:.0f} KB" if n >= 1024 else f"{max(n, 0)} bytes"


def temp_prefix(target: str | Path, kind: str = "tmp") -> str:
    """The prefix of this process's temporary siblings of `target`: `.<name>.<kind>-p<pid>-`."""
    return f".{Path(target).name}.{kind}-p{os.getpid()}-"


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Remove the temporary siblings of `target` (`.<name>.tmp-*`, `.old-*`, `.extract-*`) left by
    a process that no longer runs; return what was removed. Live writers' temps are kept."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:tmp|old|extract)-(?:p(\d+)(?:-|$))?")
    removed = []
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if not match or (match.group(1) and _alive(int(match.group(1)))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        log.info("removed %d stale temporary item(s) of an interrupted run: %s", len(removed),
                 ", ".join(str(p) for p in removed[:5]))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(target: str | Path, data: Any) -> None:
    """Write JSON atomically, pretty-printed, keys in insertion order."""
    with atomic_file(target) as fh:
        json.dump(data, fh, indent=2, default=_json_default)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path) as fh:
        return json.load(fh)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
