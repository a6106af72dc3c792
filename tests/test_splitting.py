"""The split stage: stratified, deterministic, fraction-exact, capped and leakage-checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from vitbench.core import config
from vitbench.data.manifest import read_labels, read_manifest, write_manifest
from vitbench.data.splitting import check_leakage, split_dataset, split_sizes
from vitbench.core.errors import ConfigError, DataError
from vitbench.core.fsutil import read_json
from vitbench.core.paths import Paths

CFG = config.section_with("split", val=0.15, test=0.15)


def make_clean(paths: Paths, counts: dict[str, int], *, shuffle_seed: int | None = None) -> pd.DataFrame:
    """A clean manifest with `counts[class]` distinct (tiny, real) files per class."""
    rows = []
    for cls, n in counts.items():
        for i in range(n):
            data = f"{cls}-{i}".encode()
            sha = hashlib.sha256(data).hexdigest()
            path = paths.clean / cls / f"{sha[:16]}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            rows.append((str(path), cls, sha, 40, 40, "RGB", f"{cls}/{i}.jpg", sha[:16]))
    df = pd.DataFrame(rows, columns=["path", "class", "sha256", "width", "height", "mode", "source",
                                     "dhash"])
    if shuffle_seed is not None:
        df = df.sample(frac=1.0, random_state=shuffle_seed)
    write_manifest(df, paths.clean_manifest)
    return df


def per_class(paths: Paths) -> dict[str, dict[str, int]]:
    """metrics/split_classes.csv as {class: {train, val, test}}."""
    df = pd.read_csv(paths.metrics / "split_classes.csv", keep_default_na=False)
    return {r["class"]: {s: r[s] for s in ("train", "val", "test")} for r in df.to_dict("records")}


def split_of(paths: Paths) -> dict[str, set[str]]:
    return {s: set(read_manifest(paths.split_csv(s))["sha256"]) for s in ("train", "val", "test")}


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path)


def test_outputs_and_metrics(paths: Paths) -> None:
    clean = make_clean(paths, {"dog": 20, "cat": 7, "ant": 40})
    metrics = split_dataset(CFG, 1, paths)

    assert metrics == read_json(paths.metrics_json("split"))
    assert set(metrics) == {"train", "val", "test", "unused", "classes", "near_duplicate_groups",
                            "near_duplicate_images"}, "flat for dvc metrics show"
    assert per_class(paths) == {"ant": {"train": 28, "val": 6, "test": 6},
                                    "cat": {"train": 5, "val": 1, "test": 1},
                                    "dog": {"train": 14, "val": 3, "test": 3}}
    assert (metrics["train"], metrics["val"], metrics["test"]) == (47, 10, 10)
    assert (metrics["unused"], metrics["classes"]) == (0, 3)
    assert read_labels(paths.labels) == ["ant", "cat", "dog"]
    assert read_json(paths.labels) == {"classes": ["ant", "cat", "dog"]}

    sets = split_of(paths)
    assert set().union(*sets.values()) == set(clean["sha256"])       # every image used once
    for name in ("train", "val", "test"):
        df = read_manifest(paths.split_csv(name))
        assert list(df.columns) == list(clean.columns) + ["split"]
        assert (df["split"] == name).all()
        assert all(Path(p).is_file() and Path(p).parent.parent == paths.clean.resolve()
                   for p in df["path"])                              # manifests, not copies
    assert not list(paths.split.rglob("*.png"))


def test_same_seed_same_split_other_seed_different(paths: Paths) -> None:
    make_clean(paths, {"a": 30, "b": 30})
    split_dataset(CFG, 7, paths)
    first = {s: paths.split_csv(s).read_bytes() for s in ("train", "val", "test")}
    split_dataset(CFG, 7, paths)
    assert {s: paths.split_csv(s).read_bytes() for s in ("train", "val", "test")} == first
    before = split_of(paths)
    split_dataset(CFG, 8, paths)
    after = split_of(paths)
    assert before["test"] != after["test"]
    assert {k: len(v) for k, v in before.items()} == {k: len(v) for k, v in after.items()}


def test_split_ignores_manifest_row_order(paths: Paths) -> None:
    make_clean(paths, {"a": 25, "b": 12})
    split_dataset(CFG, 3, paths)
    ordered = split_of(paths)
    make_clean(paths, {"a": 25, "b": 12}, shuffle_seed=5)
    split_dataset(CFG, 3, paths)
    assert split_of(paths) == ordered


def test_fractions_are_respected(paths: Paths) -> None:
    make_clean(paths, {"a": 100, "b": 50})
    split_dataset(config.section_with("split", val=0.2, test=0.1), 0, paths)
    assert per_class(paths) == {"a": {"train": 70, "val": 20, "test": 10},
                                    "b": {"train": 35, "val": 10, "test": 5}}


@pytest.mark.parametrize(("n", "val", "test", "expected"), [
    (3, 0.15, 0.15, (1, 1, 1)),      # each non-zero fraction gets at least one image
    (4, 0.4, 0.4, (1, 1, 2)),        # rounding would leave no train image: shrink the larger split
    (10, 0.0, 0.3, (7, 0, 3)),       # a zero fraction stays empty
    (1, 0.0, 0.0, (1, 0, 0)),
    (21, 0.15, 0.15, (15, 3, 3)),
])
def test_split_sizes(n: int, val: float, test: float, expected: tuple[int, int, int]) -> None:
    assert split_sizes(n, config.section_with("split", val=val, test=test), "c") == expected


def test_max_train_per_class_caps_train_only(paths: Paths) -> None:
    make_clean(paths, {"a": 40, "b": 12})
    split_dataset(CFG, 4, paths)
    full = per_class(paths)
    uncapped = split_of(paths)
    capped = split_dataset(config.section_with("split", val=0.15, test=0.15, max_train_per_class=10), 4, paths)
    sets = split_of(paths)
    assert per_class(paths) == {"a": {"train": 10, "val": 6, "test": 6},
                                   "b": {"train": 8, "val": 2, "test": 2}}
    assert capped["unused"] == full["a"]["train"] - 10 == 18
    assert sets["val"] == uncapped["val"] and sets["test"] == uncapped["test"]
    assert sets["train"] < uncapped["train"]


def test_duplicated_sha256_across_classes_is_leakage(paths: Paths) -> None:
    clean = make_clean(paths, {"a": 10, "b": 10})
    clean.loc[clean["class"] == "b", "sha256"] = clean.loc[clean["class"] == "a", "sha256"].values[0]
    write_manifest(clean.iloc[:11], paths.clean_manifest)    # b's first image has a's hash
    with pytest.raises(DataError, match="same image.*leak"):
        split_dataset(CFG, 0, paths)
    assert not paths.split.exists() and not paths.metrics.exists()


def test_check_leakage_names_the_images() -> None:
    df = pd.DataFrame({"path": ["/x/1.png", "/y/2.png", "/x/3.png", "/x/4.png"],
                       "class": ["a", "b", "a", "a"],
                       "sha256": ["s1", "s1", "s3", "s3"],
                       "split": ["train", "test", "train", "unused"]})
    with pytest.raises(DataError, match=r"1 image\(s\).*/y/2.png in test; /x/1.png in train"):
        check_leakage(df)
    check_leakage(df.iloc[2:])   # the same image in train and unused is not leakage


def test_too_small_class_is_named_and_previous_split_kept(paths: Paths) -> None:
    make_clean(paths, {"a": 10, "b": 10})
    split_dataset(CFG, 0, paths)
    before = {p: p.read_bytes() for p in sorted(paths.split.iterdir())}
    make_clean(paths, {"a": 10, "b": 10, "tiny": 2})
    with pytest.raises(DataError, match="class 'tiny' has 2 image"):
        split_dataset(CFG, 0, paths)
    assert {p: p.read_bytes() for p in sorted(paths.split.iterdir())} == before
    make_clean(paths, {"a": 10, "b": 10, "tiny": 3})
    split_dataset(CFG, 0, paths)
    assert per_class(paths)["tiny"] == {"train": 1, "val": 1, "test": 1}


@pytest.mark.parametrize("key", ["val", "test"])
def test_an_empty_val_or_test_split_is_refused_before_anything_is_written(paths: Paths,
                                                                         key: str) -> None:
    make_clean(paths, {"a": 10, "b": 10})
    split_dataset(CFG, 0, paths)
    before = {p: p.read_bytes() for p in sorted(paths.split.iterdir())}
    with pytest.raises(ConfigError, match=f"split.{key} = 0.0 is not allowed.*non-empty {key} set"):
        split_dataset(config.section_with("split", **{"val": 0.2, "test": 0.2, key: 0.0}), 0, paths)
    assert {p: p.read_bytes() for p in sorted(paths.split.iterdir())} == before


def test_bad_manifests_are_data_errors(paths: Paths) -> None:
    with pytest.raises(DataError, match="manifest not found"):
        split_dataset(CFG, 0, paths)
    clean = make_clean(paths, {"a": 5})
    write_manifest(clean.drop(columns="sha256"), paths.clean_manifest)
    with pytest.raises(DataError, match="lacks column.*sha256"):
        split_dataset(CFG, 0, paths)
    write_manifest(clean.iloc[:0], paths.clean_manifest)
    with pytest.raises(DataError, match="lists no images"):
        split_dataset(CFG, 0, paths)
    Path(clean["path"].iloc[2]).unlink()
    write_manifest(clean, paths.clean_manifest)
    with pytest.raises(DataError, match="1 image.*missing"):
        split_dataset(CFG, 0, paths)


# --- k-fold cross-validation ----------------------------------------------------------------------

def plant_groups(paths: Paths, clean: pd.DataFrame, sizes: dict[str, list[int]]) -> pd.DataFrame:
    """Give the first images of each class shared difference hashes: groups of `sizes[class]`."""
    clean = clean.copy()
    for cls, group_sizes in sizes.items():
        rows = clean.index[clean["class"] == cls]
        start = 0
        for k, size in enumerate(group_sizes):
            clean.loc[rows[start:start + size], "dhash"] = f"{k:016x}" if k else "f" * 16
            start += size
    write_manifest(clean, paths.clean_manifest)
    return clean


def fold_splits(paths: Paths, folds: int, seed: int, **split: object) -> list[pd.DataFrame]:
    """The train/val/test manifests of every fold (a `split` column), fold by fold."""
    out = []
    for fold in range(folds):
        cfg = config.section_with("split", **{"val": 0.15, "folds": folds, "fold": fold, **split})
        split_dataset(cfg, seed, paths)
        out.append(pd.concat([read_manifest(paths.split_csv(s)) for s in ("train", "val", "test")]))
    return out


def test_folds_partition_the_images_stratified_with_groups_whole(paths: Paths) -> None:
    clean = make_clean(paths, {"a": 30, "b": 17, "c": 9})
    clean = plant_groups(paths, clean, {"a": [4, 2], "b": [3]})
    runs = fold_splits(paths, 3, 5)

    tests = [set(run.loc[run["split"] == "test", "sha256"]) for run in runs]
    assert sum(map(len, tests)) == len(clean) and set().union(*tests) == set(clean["sha256"])
    for run in runs:
        assert len(run) == len(clean) and set(run["split"]) == {"train", "val", "test"}
        by_class = run.groupby(["class", "split"]).size()
        for cls, wanted, biggest in (("a", 5, 4), ("b", 3, 3), ("c", 1, 1)):  # 0.15 of all images
            assert wanted <= by_class[(cls, "val")] <= wanted + biggest - 1, (cls, by_class)
        groups = run.merge(clean[["sha256", "dhash"]], on="sha256", suffixes=("_", ""))
        assert groups.groupby(["class", "dhash"])["split"].nunique().max() == 1
    for cls, n, biggest in (("a", 30, 4), ("b", 17, 3), ("c", 9, 1)):
        counts = [int((run.loc[run["split"] == "test", "class"] == cls).sum()) for run in runs]
        assert sum(counts) == n and max(counts) - min(counts) <= biggest, (cls, counts)


def test_folds_are_deterministic_from_the_seed_and_ignore_row_order(paths: Paths) -> None:
    make_clean(paths, {"a": 20, "b": 12})
    first = [set(r.loc[r["split"] == "test", "sha256"]) for r in fold_splits(paths, 2, 3)]
    make_clean(paths, {"a": 20, "b": 12}, shuffle_seed=4)
    assert [set(r.loc[r["split"] == "test", "sha256"]) for r in fold_splits(paths, 2, 3)] == first
    other = [set(r.loc[r["split"] == "test", "sha256"]) for r in fold_splits(paths, 2, 4)]
    assert other != first


def test_folds_ignore_split_test_and_cap_train(paths: Paths) -> None:
    make_clean(paths, {"a": 30, "b": 12})
    metrics = split_dataset(config.section_with("split", val=0.1, test=0.5, folds=3, fold=1), 0, paths)
    assert metrics["test"] == 14                       # 1/3 of 42, not split.test's half
    capped = split_dataset(config.section_with("split", val=0.1, test=0.5, folds=3, fold=1,
                                               max_train_per_class=5), 0, paths)
    assert per_class(paths)["a"]["train"] == 5 and capped["test"] == 14
    assert capped["unused"] == metrics["train"] - capped["train"] > 0


@pytest.mark.parametrize(("split", "message"), [
    ({"folds": 3, "fold": 3}, "split.fold = 3 is not allowed.*0 to split.folds - 1 \\(2\\)"),
    ({"folds": 1}, "split.folds = 1"),
    ({"folds": 2, "val": 0.5}, "split.val = 0.5 is not allowed.*below 1 - 1/split.folds"),
])
def test_bad_fold_params_are_config_errors(split: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.section_with("split", **split)


def test_more_folds_than_groups_in_a_class_is_named(paths: Paths) -> None:
    clean = make_clean(paths, {"a": 20, "b": 8})
    plant_groups(paths, clean, {"b": [4, 3]})           # b: 2 groups of near-duplicates + 1 image
    split_dataset(config.section_with("split", val=0.15, folds=3, fold=0), 0, paths)
    before = {p: p.read_bytes() for p in sorted(paths.split.iterdir())}
    with pytest.raises(DataError, match=r"split.folds = 4 needs at least 4 .*class\(es\) 'b' \(3\)"
                                        r".*split.near_duplicate_bits"):
        split_dataset(config.section_with("split", val=0.15, folds=4, fold=0), 0, paths)
    assert {p: p.read_bytes() for p in sorted(paths.split.iterdir())} == before


def test_an_empty_split_made_by_the_groups_is_refused_naming_them(paths: Paths) -> None:
    clean = make_clean(paths, {"a": 8, "b": 8})
    split_dataset(CFG, 0, paths)
    before = {p: p.read_bytes() for p in sorted(paths.split.iterdir())}
    plant_groups(paths, clean, {"a": [8], "b": [8]})    # each class one near-duplicate group
    with pytest.raises(DataError, match=r"the val split would be empty.*2 of 2 class\(es\).*'a': 1 "
                                        r"group\(s\) of 8 image.*split.near_duplicate_bits \(now 6"):
        split_dataset(CFG, 0, paths)
    assert {p: p.read_bytes() for p in sorted(paths.split.iterdir())} == before


# --- through `dvc repro split` on the tiny demo ------------------------------------------------------

@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after `dvc repro split` (fetch, clean, split), committed."""
    from conftest import tiny_project

    return tiny_project(tmp_path_factory.mktemp("folds"), "split")


def _tree(project: Path, *roots: str) -> dict[str, bytes]:
    return {p.relative_to(project).as_posix(): p.read_bytes()
            for root in roots for p in sorted((project / root).rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_the_split_stage_runs_every_fold_of_the_clean_manifest(cleaned: Path) -> None:
    from dvc_project import run, set_params, stages_run

    params = (cleaned / "params.yaml").read_bytes()
    clean = read_manifest(cleaned / "data/clean/manifest.csv")
    tested: list[pd.DataFrame] = []
    try:
        for fold in range(3):
            set_params(cleaned, {"split": {"folds": 3, "fold": fold}})
            assert stages_run(run(cleaned, "dvc", "repro", "split").stdout)[-1] == "split"
            tested.append(read_manifest(cleaned / "data/split/test.csv"))
            near = pd.read_csv(cleaned / "metrics/split_near_duplicates.csv", keep_default_na=False)
            assert near.groupby("group")["split"].nunique().max() == 1
    finally:
        (cleaned / "params.yaml").write_bytes(params)
    paths = pd.concat(tested)["path"]
    assert sorted(paths) == sorted(clean["path"]), "the test folds partition the clean images"
    sizes = pd.concat(tested, keys=range(3)).groupby(level=0)["class"].value_counts().unstack()
    assert (sizes.max() - sizes.min()).max() <= 2, sizes    # stratified (groups: a pair or so)


@pytest.mark.slow
def test_an_empty_split_is_refused_by_dvc_repro_split_keeping_outputs(cleaned: Path) -> None:
    from dvc_project import run, set_params

    params = (cleaned / "params.yaml").read_bytes()
    before = _tree(cleaned, "data/split", "metrics")
    try:
        set_params(cleaned, {"split": {"near_duplicate_bits": 32}})   # every class one group
        proc = run(cleaned, "dvc", "repro", "split", check=False)
    finally:
        (cleaned / "params.yaml").write_bytes(params)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert "split would be empty" in output and "split.near_duplicate_bits (now 32" in output, output[-3000:]
    assert _tree(cleaned, "data/split", "metrics") == before
