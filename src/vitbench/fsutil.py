"""Atomic outputs: build in a temporary sibling, rename into place only on success.

A failed stage therefore leaves the previous output exactly as it was (dvc.yaml declares every
output `persist: true`, so DVC does not delete it first either). Temporary siblings carry the
writer's pid (`.<name>.tmp-p<pid>-*`); the next writer of the same output removes those whose
process is gone (a SIGKILL'd run), see `remove_stale_temps`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `target` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; an output folder gets the usual mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), dir=target.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
