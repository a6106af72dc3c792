"""fetch runs on every `dvc repro` and rewrites nothing while its source is unchanged.

DVC cannot see inside `dataset.source` (a folder edited in place, a new archive at the same path),
so dvc.yaml marks fetch `always_changed` and this module decides whether there is anything to do:
a cheap fingerprint of the source (every file's name, size and mtime for a folder; the size and
mtime of an archive; the dataset params, the seed for synthetic, and the fetch code for all) is
compared with the one stored after the last successful fetch in metrics/fetch_state.json, which
also records a listing (names, sizes) of the data/raw it wrote and hashes of the fetch reports.
While all three still match, fetch returns at once: data/raw stays byte-identical, so DVC re-runs
nothing downstream. Otherwise it fetches again; an identical result (a touched file) still leaves
data/raw's DVC hash unchanged, so clean and the rest re-run only when the data really changed.
The state file is a (git-tracked) output of fetch, so a clone that pulled data/raw does not fetch
a synthetic or URL source again.
A local source is checked first (`source_checks`): a missing one, or one that overlaps the
project's data/, is refused before anything is read or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from vitbench.core import deps
from vitbench.core.config import Dataset, to_dict
from vitbench.data.fetch_report import REJECTED_CSV
from vitbench.data.source_checks import check_source
from vitbench.core.fsutil import read_json, remove_stale_temps, sha256_file, write_json
from vitbench.core.paths import Paths

log = logging.getLogger(__name__)

STATE_FILE = "fetch_state.json"
FETCH_MODULE = "vitbench.data.sources"   # imported only when there is something to fetch


def fetch_if_changed(cfg: Dataset, seed: int, paths: Paths) -> dict | None:
    """Fetch `cfg.source` into data/raw unless the last fetch already did it from the same source;
    return fetch's summary, or None when nothing was rewritten."""
    state_file = paths.metrics / STATE_FILE
    check_source(cfg, paths)  # before the fingerprint reads it (a source of `.` reads the project)
    source = source_fingerprint(cfg, seed)
    remove_leftovers(paths)
    if _state(paths, source) == _read_state(state_file):
        log.info("dataset.source %s is unchanged since the last fetch (fingerprint %s): data/raw "
                 "kept as it is; delete %s to fetch it again anyway", cfg.source, source[:12],
                 state_file)
        return None
    from vitbench.data.sources import fetch_dataset

    summary = fetch_dataset(cfg, seed, paths)
    write_json(state_file, _state(paths, source))
    return summary


def remove_leftovers(paths: Paths) -> None:
    """Remove what killed fetches left: temps of data/raw whose process is gone, and the
    `data/.extract-*` folders of versions before the pid-stamped temps."""
    remove_stale_temps(paths.raw)
    data = paths.raw.parent
    if data.is_dir():
        for stale in data.glob(".extract-*"):
            log.info("removing the stale extraction folder %s of an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)


def source_fingerprint(cfg: Dataset, seed: int) -> str:
    """A hash of what fetch's result depends on, read without opening a single image."""
    payload: dict[str, Any] = {
        "dataset": to_dict(cfg),
        "seed": seed if cfg.kind == "synthetic" else None,
        "code": {deps.relative(f): sha256_file(f) for f in deps.module_files(FETCH_MODULE)},
    }
    if cfg.kind in ("folder", "archive"):
        payload["source"] = _listing(Path(cfg.source).expanduser(), with_mtime=True)
    return _digest(payload)


def _state(paths: Paths, source: str) -> dict:
    """What must still hold for the last fetch to stand: its source, data/raw, its reports."""
    reports = (paths.metrics_json("fetch"), paths.metrics / REJECTED_CSV)
    return {"source": source, "raw": _digest(_listing(paths.raw, with_mtime=False)),
            "reports": [sha256_file(p) if p.is_file() else None for p in reports]}


def _read_state(path: Path) -> dict | None:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _listing(root: Path, *, with_mtime: bool) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns or 0) of every file under `root` (or of `root` itself),
    and (path, -1, 0) of every folder (an empty one is reported by fetch); links are not
    followed into folders; names as their bytes (hex), so non-UTF-8 names count too."""
    if root.is_file():
        stat = root.stat()
        return [("", stat.st_size, stat.st_mtime_ns if with_mtime else 0)]
    rows = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in dirs:
            rows.append((os.fsencode(os.path.relpath(os.path.join(folder, name), root)).hex(), -1, 0))
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)  # a link's target: fetch copies what it points to
            except OSError:  # a dangling link
                stat = os.lstat(path)
            rel = os.fsencode(os.path.relpath(path, root)).hex()
            rows.append((rel, stat.st_size, stat.st_mtime_ns if with_mtime else 0))
    return rows


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
