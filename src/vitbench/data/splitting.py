"""The `split` stage: a stratified, seeded, leakage-checked train/val/test split of the clean manifest.

The split is stored as manifests (no copies). Each class is shuffled by its own generator, derived
from the seed and the class name, after sorting by content hash, so the split depends on neither the
manifest's row order nor the other classes.

Near-duplicates (the same picture at another JPEG quality or size: difference hashes at most
`split.near_duplicate_bits` apart, within a class) form a group, and a group goes to one split as a
whole, so a re-encoded copy of a test image never sits in train. The groups are counted in
metrics/split.json and listed in metrics/split_near_duplicates.csv.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from vitbench.core import config
from vitbench.data.manifest import read_manifest, write_labels, write_manifest
from vitbench.core.errors import ConfigError, DataError
from vitbench.core.fsutil import atomic_dir, atomic_file, write_json
from vitbench.core.paths import Paths

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
UNUSED = "unused"
REQUIRED_COLUMNS = ("path", "class", "sha256")
CLASSES_CSV = "split_classes.csv"              # per-class counts, kept out of metrics/split.json
NEAR_DUPLICATES_CSV = "split_near_duplicates.csv"


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


def near_duplicate_groups(hashes: list[str], max_bits: int | None) -> np.ndarray:
    """A group id per image (the index of its group's first member): images whose 64-bit
    difference hashes are at most `max_bits` apart are linked, transitively. None: no grouping."""
    n = len(hashes)
    parent = np.arange(n)
    if max_bits is None or n < 2:
        return parent

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    for i in range(n - 1):
        for j in np.nonzero(np.bitwise_count(values[i + 1:] ^ values[i]) <= max_bits)[0] + i + 1:
            a, b = root(i), root(int(j))
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(n)])


def assign_splits(df: pd.DataFrame, cfg: config.Split, seed: int) -> pd.DataFrame:
    """The manifest plus `split` (train, val, test or unused: over max_train_per_class) and `group`
    (near-duplicate group id within the class, see `near_duplicate_groups`).

    With `split.folds` set, fold `split.fold` of a `StratifiedGroupKFold` over all images is the
    test split (see `fold_test_mask`) and val is carved from the other folds, per class, as
    `split.val` of the class's images (the same share of all images as without folds)."""
    df = _grouped(df, cfg)
    in_test = fold_test_mask(df, cfg, seed) if cfg.folds is not None else None
    parts = []
    for cls, group in df.groupby("class", sort=True):
        ids = group["_gid"].to_numpy()
        if in_test is None:
            order = _class_rng(seed, str(cls)).permutation(len(group))
            n_train, n_val, n_test = split_sizes(len(group), cfg, str(cls))
            labels = _group_labels(order, ids, n_test, n_val)
        else:
            labels = _fold_labels(in_test[group.index].to_numpy(), ids, cfg,
                                  _class_rng(seed, str(cls)))
        cap = cfg.max_train_per_class
        train_rows = [i for i in _class_rng(seed, str(cls)).permutation(len(group))
                      if labels[i] == "train"]
        if cap is not None and len(train_rows) > cap:
            labels[train_rows[cap:]] = UNUSED
        parts.append(group.assign(split=labels))
    out = pd.concat(parts, ignore_index=True).drop(columns="_gid")
    return out.sort_values(["class", "path"], ignore_index=True)


def _grouped(df: pd.DataFrame, cfg: config.Split) -> pd.DataFrame:
    """The manifest sorted by class and content hash (so nothing depends on its row order), with
    `group` ("<class>#<id>") and `_gid` (the id: see `near_duplicate_groups`)."""
    has_hash = "dhash" in df.columns and (df["dhash"] != "").all()
    if not has_hash and cfg.near_duplicate_bits is not None:
        log.warning("the clean manifest has no dhash column: near-duplicates are not grouped "
                    "(re-run `dvc repro clean`)")
    df = df.sort_values(["class", "sha256"], kind="stable", ignore_index=True)
    gid = np.zeros(len(df), dtype=int)
    for _, rows in df.groupby("class", sort=True):
        gid[rows.index] = near_duplicate_groups(list(rows["dhash"]), cfg.near_duplicate_bits) \
            if has_hash else np.arange(len(rows))
    return df.assign(_gid=gid, group=[f"{c}#{g}" for c, g in zip(df["class"], gid)])


def fold_test_mask(df: pd.DataFrame, cfg: config.Split, seed: int) -> pd.Series:
    """True for the images of test fold `split.fold`: scikit-learn's StratifiedGroupKFold
    (shuffled by `seed`) over `df` (as `_grouped` leaves it), stratified by class, each
    near-duplicate group in one fold. DataError if a class has fewer groups than folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    assert cfg.folds is not None
    check_folds(df, cfg, cfg.folds)
    folds = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=seed)
    _, test = list(folds.split(df, df["class"], df["group"]))[cfg.fold]
    return pd.Series(np.isin(np.arange(len(df)), test), index=df.index)


def check_folds(df: pd.DataFrame, cfg: config.Split, folds: int) -> None:
    """DataError unless every class of `df` (with `group`, as `_grouped` leaves it) has at least
    `folds` near-duplicate groups, so that every fold tests every class."""
    groups = df.groupby("class")["group"].nunique()
    short = groups[groups < folds]
    if len(short):
        named = ", ".join(f"'{c}' ({n})" for c, n in short.head(6).items())
        raise DataError(
            f"split.folds = {folds} needs at least {folds} images per class (near-duplicate "
            f"groups, each kept within one fold), so that every fold tests every class; too few in "
            f"class(es) {named}. Lower split.folds, add images, or lower "
            f"split.near_duplicate_bits (now {cfg.near_duplicate_bits}) to group fewer images")


def check_folds_of_manifest(csv: Path, cfg: config.Split, folds: int) -> None:
    """`check_folds` over a clean manifest (data/clean/manifest.csv)."""
    check_folds(_grouped(read_manifest(csv), cfg), cfg, folds)


def _fold_labels(in_test: np.ndarray, ids: np.ndarray, cfg: config.Split,
                 rng: np.random.Generator) -> np.ndarray:
    """One class's labels in cross-validation: its images in the test fold are test; of the rest,
    about `split.val` of the class's images (groups kept whole, at least one when split.val > 0,
    at least one image left to train) are val, the others train."""
    labels = np.full(len(in_test), "test", dtype=object)
    rest = np.flatnonzero(~in_test)
    wanted = max(1, math.floor(len(in_test) * cfg.val + 0.5)) if cfg.val > 0 else 0
    n_val = max(0, min(wanted, len(rest) - 1))
    if len(rest):
        labels[rest] = _group_labels(rng.permutation(len(rest)), ids[rest], 0, n_val)
    return labels


def _group_labels(order: np.ndarray, ids: np.ndarray, n_test: int, n_val: int) -> np.ndarray:
    """Walk the images in `order`; each group takes the split of the position its first member
    reaches (test first, then val, then train) and all its members go there. Without groups this
    is exactly the per-image assignment; a group may overshoot its split by its size - 1."""
    labels = np.empty(len(order), dtype=object)
    members: dict[int, list[int]] = {}
    for i in order:
        members.setdefault(int(ids[i]), []).append(int(i))
    position = 0
    for i in order:
        if labels[i] is not None:
            continue
        split = "test" if position < n_test else "val" if position < n_test + n_val else "train"
        labels[members[int(ids[i])]] = split
        position += len(members[int(ids[i])])
    if not (labels == "train").any():  # one big group ate the class: it trains instead
        biggest = max(members.values(), key=len)
        labels[biggest] = "train"
    return labels


def check_leakage(df: pd.DataFrame) -> None:
    """DataError if an identical image (same sha256), or a near-duplicate group, sits in two of
    train, val and test."""
    used = df[df["split"].isin(SPLITS)]
    for column, what in (("sha256", "image(s)"), ("group", "near-duplicate group(s)")):
        if column not in used.columns:
            continue
        spread = used.groupby(column)["split"].nunique()
        leaked = spread[spread > 1].index
        if len(leaked):
            rows = used[used[column].isin(leaked)].sort_values([column, "split"])
            examples = "; ".join(f"{r.path} in {r.split}" for r in rows.head(6).itertuples())
            raise DataError(f"leakage: {len(leaked)} {what} appear in more than one split "
                            f"(e.g. {examples}); they would inflate test accuracy")


def check_fractions(cfg: config.Split) -> None:
    """ConfigError for `split.val: 0` or `split.test: 0`: training stops early on the validation
    set and evaluate scores the test set, so an empty one would fail only after training."""
    for key, needed_by in (("val", "training (early stopping, checkpoints)"),
                           ("test", "evaluate (every reported metric)")):
        if key == "test" and cfg.folds is not None:
            continue        # the test fold is 1/folds of the images; split.test is not used
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"split.{key}", getattr(cfg, key),
                              f"a fraction above 0 (for example 0.15): {needed_by} needs a "
                              f"non-empty {key} set")


def check_not_empty(df: pd.DataFrame, cfg: config.Split) -> None:
    """DataError if val or test came out empty, naming the cause: a near-duplicate group stays
    within one split, so a class that is one group (or two) cannot fill every split."""
    for name in ("val", "test"):
        if (df["split"] == name).any():
            continue
        groups = df.groupby("class")["group"].nunique().sort_values(kind="stable")
        few = groups[groups < len(SPLITS)]
        sizes = df.groupby("class").size()
        cause = (f"{len(few)} of {len(groups)} class(es) have fewer near-duplicate groups than "
                 f"there are splits (" + ", ".join(f"'{c}': {n} group(s) of {sizes[c]} image(s)"
                                                 for c, n in few.head(6).items())
                 + "), and a group stays within one split. Lower split.near_duplicate_bits (now "
                 f"{cfg.near_duplicate_bits}; null turns grouping off) or add more varied images"
                 ) if len(few) else (
                 f"too few images for split.{name} = {cfg.val if name == 'val' else cfg.test}; "
                 "raise it or add images")
        raise DataError(f"split: the {name} split would be empty ({name} is needed by "
                        f"{'training' if name == 'val' else 'evaluate'}): {cause}")


def split_dataset(cfg: config.Split, seed: int, paths: Paths) -> dict:
    """Split data/clean/manifest.csv into data/split/{train,val,test}.csv + labels.json and
    metrics/split.json; returns the metrics."""
    check_fractions(cfg)
    df = _read_clean(paths.clean_manifest)
    assigned = assign_splits(df, cfg, seed)
    check_leakage(assigned)
    check_not_empty(assigned, cfg)
    classes = sorted(assigned["class"].unique())
    near = _near_duplicates(assigned)
    with atomic_dir(paths.split) as tmp:
        for name in SPLITS:
            write_manifest(assigned[assigned["split"] == name].drop(columns="group"),
                           tmp / f"{name}.csv")
        write_labels(classes, tmp / paths.labels.name)
    metrics = _metrics(assigned, classes, near)
    _write_csv(_class_counts(assigned, classes), paths.metrics / CLASSES_CSV)
    _write_csv(near, paths.metrics / NEAR_DUPLICATES_CSV)
    write_json(paths.metrics_json("split"), metrics)
    log.info("split: train %d, val %d, test %d, unused %d over %d classes; %d near-duplicate "
             "group(s) of %d images kept within one split", metrics["train"], metrics["val"],
             metrics["test"], metrics["unused"], metrics["classes"],
             metrics["near_duplicate_groups"], metrics["near_duplicate_images"])
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


def _near_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """metrics/split_near_duplicates.csv: every image of a group of two or more."""
    sizes = df.groupby("group")["path"].transform("size")
    near = df[sizes > 1]
    columns = ["group", "class", "split", "source", "dhash"]
    near = near.reindex(columns=columns, fill_value="")
    return near.sort_values(["class", "group", "source"], ignore_index=True)


def _class_counts(df: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    counts = df.groupby(["class", "split"]).size()
    return pd.DataFrame([(c, *(int(counts.get((c, s), 0)) for s in (*SPLITS, UNUSED)))
                         for c in classes], columns=["class", *SPLITS, UNUSED])


def _write_csv(df: pd.DataFrame, csv: Path) -> None:
    with atomic_file(csv) as fh:
        df.to_csv(fh, index=False)


def _metrics(df: pd.DataFrame, classes: list[str], near: pd.DataFrame) -> dict:
    """metrics/split.json: few flat keys; per-class counts are metrics/split_classes.csv."""
    totals = df["split"].value_counts()
    return {
        **{s: int(totals.get(s, 0)) for s in SPLITS},
        UNUSED: int(totals.get(UNUSED, 0)),
        "classes": len(classes),
        "near_duplicate_groups": int(near["group"].nunique()),
        "near_duplicate_images": len(near),
    }
