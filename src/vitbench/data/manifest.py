"""Manifests: the CSV files that carry a dataset between stages.

Every manifest has at least `path` and `class` columns. On disk, `path` is relative to the CSV's own
folder, so a repo (or a DVC experiment's temp workspace) can move; in memory it is absolute.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from vitbench.core.errors import DataError
from vitbench.core.fsutil import atomic_file, read_json, write_json

REQUIRED = ("path", "class")
# columns that hold text, in any of our CSVs (manifests, rejected lists, reports, predictions)
TEXT_COLUMNS = ("path", "class", "sha256", "mode", "source", "origin", "dhash", "reason", "detail",
                "split", "actual", "predicted", "top3", "group")


def read_manifest(csv: str | Path) -> pd.DataFrame:
    """Read a manifest; `path` comes back absolute. A missing file or column is a DataError."""
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"manifest not found: {csv} (run the stage that writes it: `dvc repro`)")
    df = read_csv_keeping_strings(csv)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"manifest {csv} lacks column(s) {', '.join(missing)}")
    base = csv.resolve().parent
    df["path"] = [str((base / p).resolve()) for p in df["path"]]
    return df


def read_csv_keeping_strings(csv: str | Path, **kwargs: object) -> pd.DataFrame:
    """`pd.read_csv` that keeps text as text: a class called `NA`, `None`, `null` or `nan` stays a
    string (pandas' default turns those into NaN), and the text columns are read as `str`."""
    text = {c: str for c in TEXT_COLUMNS}
    return pd.read_csv(csv, dtype=text, keep_default_na=False, na_values=[], **kwargs)


def write_manifest(df: pd.DataFrame, csv: str | Path) -> None:
    """Write a manifest atomically with `path` made relative to the CSV's folder."""
    csv = Path(csv)
    csv.parent.mkdir(parents=True, exist_ok=True)
    base = csv.resolve().parent
    out = df.copy()
    out["path"] = [Path(os.path.relpath(Path(p).resolve(), base)).as_posix() for p in out["path"]]
    with atomic_file(csv) as fh:
        out.to_csv(fh, index=False)


def read_labels(path: str | Path) -> list[str]:
    """The class order every stage after `split` uses (index = label id)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels file not found: {path} (run `dvc repro split`)")
    labels = read_json(path)
    if isinstance(labels, dict):
        labels = labels["classes"]
    return list(labels)


def write_labels(classes: list[str], path: str | Path) -> None:
    """Write labels.json: {"classes": [...]} in label-id order."""
    write_json(path, {"classes": list(classes)})
