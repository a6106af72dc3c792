"""Checks of a local `dataset.source` made before fetch reads or writes anything.

Cheap (no image is opened, no heavy import), so fetch runs them on every `dvc repro` before it
fingerprints the source: a path that does not exist or has the wrong kind, and a folder that
would make the project its own dataset (the project root, a folder holding its data/, a folder
inside data/), or an archive inside data/raw (which fetch replaces), are ConfigErrors.
"""

from __future__ import annotations

from pathlib import Path

from vitbench.core.config import ARCHIVE_SUFFIXES, Dataset
from vitbench.core.errors import ConfigError
from vitbench.core.paths import Paths


def check_source(cfg: Dataset, paths: Paths) -> None:
    """ConfigError when a local dataset.source does not exist, has the wrong kind or overlaps
    the project's data/ (see the module's docstring)."""
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
    _check_place(cfg, path.resolve(), paths)


def _check_place(cfg: Dataset, source: Path, paths: Paths) -> None:
    """ConfigError when the source overlaps what fetch writes or what the project's stages own."""
    data, raw = paths.raw.parent.resolve(), paths.raw.resolve()
    if cfg.kind == "archive":
        if source.is_relative_to(raw):
            raise ConfigError("dataset.source", cfg.source,
                              f"an archive outside {raw}, which fetch replaces; move it elsewhere")
        return
    if data.is_relative_to(source):  # the project root or a folder above it
        raise ConfigError("dataset.source", cfg.source,
                          f"a folder of class folders outside the project; that folder holds the "
                          f"project's own data folder {data}")
    if source.is_relative_to(data):
        raise ConfigError("dataset.source", cfg.source,
                          f"a folder of class folders outside {data}, which the pipeline writes; "
                          f"move or copy it elsewhere")
