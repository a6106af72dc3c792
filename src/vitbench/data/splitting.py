"""The `split` stage: a stratified, seeded, leakage-checked train/val/test split of the clean manifest.

The split is stored as manifests (no copies). Each class is shuffled by its own generator, derived
from the seed and the class name, after sorting by content hash, so the split depends on neither the
manifest's row order nor the other classes.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from vitbench import config
from vitbench.data.manifest import read_manifest, write_labels, write_manifest
from vitbench.errors import DataError
from vitbench.fsutil import atomic_dir, write_json
from vitbench.paths import Paths

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
UNUSED = "unused"
REQUIRED_COLUMNS = ("path", "class", "sha256")


def split_sizes(n: int, cfg: config.Split, cls: str) -> tuple[int, int, int]:
    """(train, val, test) sizes of a class of `n` images, before max_train_per_class.

    A non-zero fraction gives at least one image, and train always keeps at least one; a class too
    small for that raises DataError naming it.
    """
    wanted = {"val": cfg.val, "test": cfg.test}
    needed = 1 + sum(f > 0 for f in wanted.values())
    if n < needed:
        raise DataError(
            f"class '{cls}' has {n} image(s): too few to split; with split.val = {cfg.val} and "
            f"split.test = {cfg.test} every class needs at least {needed} (one per non-empty split)")
    sizes = {k: max(1, math.floor(n * f + 0.5)) if f > 0 else 0 for k, f in wanted.items()}
    while n - sizes["val"] - sizes["test"] < 1:
        biggest = max(sizes, key=lambda k: (sizes[k], k))
        sizes[biggest] -= 1
    return n - sizes["val"] - sizes["test"], sizes["val"], sizes["test"]


def assign_splits(df: pd.DataFrame, cfg: config.Split, seed: int) -> pd.DataFrame:
    """The manifest plus a `split` column: train, val, test or unused (over max_train_per_class)."""
    parts = []
    for cls, group in df.groupby("class", sort=True):
        group = group.sort_values("sha256", kind="stable").reset_index(drop=True)
        order = _class_rng(seed, str(cls)).permutation(len(group))
        n_train, n_val, n_test = split_sizes(len(group), cfg, str(cls))
        labels = np.array(["test"] * n_test + ["val"] * n_val + ["train"] * n_train, dtype=object)
        cap = cfg.max_train_per_class
        if cap is not None and n_train > cap:
            labels[n_test + n_val + cap:] = UNUSED
        group["split"] = labels[np.argsort(order)]
        parts.append(group)
    return pd.concat(parts, ignore_index=True).sort_values(["class", "path"], ignore_index=True)


def check_leakage(df: pd.DataFrame) -> None:
    """DataError if an identical image (same sha256) sits in two of train, val and test."""
    used = df[df["split"].isin(SPLITS)]
    spread = used.groupby("sha256")["split"].nunique()
    leaked = spread[spread > 1].index
    if len(leaked):
        rows = used[used["sha256"].isin(leaked)].sort_values(["sha256", "split"])
        examples = "; ".join(f"{r.path} in {r.split}" for r in rows.head(6).itertuples())
        raise DataError(f"leakage: {len(leaked)} image(s) appear in more than one split "
                        f"(e.g. {examples}); identical images would inflate test accuracy")


def split_dataset(cfg: config.Split, seed: int, paths: Paths) -> dict:
    """Split data/clean/manifest.csv into data/split/{train,val,test}.csv + labels.json and
    metrics/split.json; returns the metrics."""
    df = _read_clean(paths.clean_manifest)
    assigned = assign_splits(df, cfg, seed)
    check_leakage(assigned)
    classes = sorted(assigned["class"].unique())
    with atomic_dir(paths.split) as tmp:
        for name in SPLITS:
            write_manifest(assigned[assigned["split"] == name], tmp / f"{name}.csv")
        write_labels(classes, tmp / paths.labels.name)
    metrics = _metrics(assigned, classes)
    write_json(paths.metrics_json("split"), metrics)
    log.info("split: train %d, val %d, test %d, unused %d over %d classes", metrics["train"],
             metrics["val"], metrics["test"], metrics["unused"], metrics["classes"])
    return metrics


def _read_clean(csv: Path) -> pd.DataFrame:
    """The clean manifest, checked: required columns, not empty, unique images, files present."""
    df = read_manifest(csv)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"manifest {csv} lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise DataError(f"manifest {csv} lists no images (re-run `dvc repro clean`)")
    dupes = df[df["sha256"].duplicated(keep=False)].sort_values("sha256")
    if len(dupes):
        head = dupes.head(6)
        examples = "; ".join(f"{p} (class {c})" for p, c in zip(head["path"], head["class"]))
        raise DataError(f"manifest {csv} lists the same image (sha256) more than once, which would "
                        f"leak between splits: {examples}. Re-run `dvc repro clean` to deduplicate")
    absent = [p for p in df["path"] if not Path(p).is_file()]
    if absent:
        raise DataError(f"{len(absent)} image(s) in {csv} are missing, e.g. {absent[0]} "
                        "(re-run `dvc repro clean`)")
    return df


def _class_rng(seed: int, cls: str) -> np.random.Generator:
    """A generator for one class, stable across runs, machines and other classes."""
    return np.random.default_rng([seed, int(hashlib.sha256(cls.encode()).hexdigest()[:16], 16)])


def _metrics(df: pd.DataFrame, classes: list[str]) -> dict:
    counts = df.groupby(["class", "split"]).size()
    per_class = {c: {s: int(counts.get((c, s), 0)) for s in SPLITS} for c in classes}
    totals = df["split"].value_counts()
    return {
        **{s: int(totals.get(s, 0)) for s in SPLITS},
        UNUSED: int(totals.get(UNUSED, 0)),
        "classes": len(classes),
        "per_class": per_class,
    }
