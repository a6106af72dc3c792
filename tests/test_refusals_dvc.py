"""Refusals through `dvc repro`, as users run it: a refused or failed stage exits non-zero with
its message and leaves every earlier output byte-identical (`persist: true` + atomic writes); what
fetch, clean and split drop or rename is counted, and nothing is lost on the way."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import unicodedata
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from dvc_project import TINY, commit, deep_update, run, stages_run

pytestmark = pytest.mark.slow

DATA_OUTS = ("data/raw", "data/clean", "data/split", "data/augmented", "metrics")
TRAIN_OUTS = ("models/cnn_transfer", "models/cnn_finetuned", "plots/cnn_transfer/train",
              "plots/cnn_finetuned/train")


def snapshot(project: Path, roots: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under `roots` (relative path -> hash)."""
    out = {}
    for root in roots:
        base = project / root
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            out[f.relative_to(project).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    assert out, f"nothing under {roots}"
    return out


@contextmanager
def params_text(project: Path, text: str) -> Iterator[None]:
    """params.yaml replaced by `text` for the block, restored (byte for byte) after it."""
    path = project / "params.yaml"
    saved = path.read_bytes()
    path.write_text(text)
    try:
        yield
    finally:
        path.write_bytes(saved)


def with_changes(project: Path, changes: dict) -> str:
    params = yaml.safe_load((project / "params.yaml").read_text())
    return yaml.safe_dump(deep_update(params, changes), sort_keys=False)


def refused(project: Path, stage: str, message: str, keep: tuple[str, ...]) -> str:
    """`dvc repro <stage>` fails with `message`; the outputs under `keep` are byte-identical."""
    before = snapshot(project, keep)
    proc = run(project, "dvc", "repro", stage, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert message in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert snapshot(project, keep) == before, "an earlier output changed"
    return output


def _png(seed: int, size: int = 40) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# --- one tiny reproduced pipeline, shared by the refusal tests ------------------------------

@pytest.fixture(scope="module")
def trained(full_dag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the suite's full tiny `dvc repro` (conftest.full_dag), committed."""
    from conftest import copy_built

    return copy_built(full_dag, tmp_path_factory.mktemp("refusals") / "project")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    evil = folder / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for name in ("cat/ok.png", "cat/../../escape.png"):
            info = tarfile.TarInfo(name)
            info.size = len(_png(1))
            tar.addfile(info, io.BytesIO(_png(1)))
    good = folder / "good.tar"
    with tarfile.open(good, "w") as tar:
        for cls in ("cat", "dog"):
            info = tarfile.TarInfo(f"{cls}/a.png")
            info.size = len(_png(2))
            tar.addfile(info, io.BytesIO(_png(2)))
    bomb = folder / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/zeros.png", b"\0" * (40 << 20))
    cut = folder / "cut.tar"  # cut where the second member starts: no end-of-archive blocks
    with tarfile.open(good) as tar:
        cut.write_bytes(good.read_bytes()[:tar.getmembers()[1].offset])
    return {"evil": evil, "good": good, "bomb": bomb, "cut": cut}


@pytest.mark.parametrize("case", ["dotdot_tar", "missing_source", "bad_sha256", "zip_bomb",
                                  "unknown_mixed_keys", "truncated_tar"])
def test_refused_fetch_keeps_every_output(trained: Path, hostile: dict[str, Path], case: str) -> None:
    changes, message = {
        "dotdot_tar": ({"dataset": {"source": str(hostile["evil"])}}, "points outside the extraction"),
        "missing_source": ({"dataset": {"source": "/does/not/exist"}}, "that path does not exist"),
        "bad_sha256": ({"dataset": {"source": str(hostile["good"]), "sha256": "0" * 64}},
                       "checksum mismatch"),
        "zip_bomb": ({"dataset": {"source": str(hostile["bomb"])}}, "looks like a zip bomb"),
        "unknown_mixed_keys": ({"dataset": {1: "a"}}, "params.yaml: dataset.1 = 'a' is not allowed"),
        "truncated_tar": ({"dataset": {"source": str(hostile["cut"])}},
                          f"truncated archive {hostile['cut']}: it ends after 1 entry"),
    }[case]
    with params_text(trained, with_changes(trained, changes)):
        refused(trained, "fetch", message, DATA_OUTS + TRAIN_OUTS)
    assert not (hostile["evil"].parent.parent / "escape.png").exists()


def test_empty_params_file_keeps_data_raw(trained: Path) -> None:
    with params_text(trained, ""):
        before = snapshot(trained, DATA_OUTS)
        proc = run(trained, "dvc", "repro", "fetch", check=False)
        assert proc.returncode != 0
        assert snapshot(trained, DATA_OUTS) == before
    output = proc.stdout + proc.stderr
    assert "the file is empty" in output or "params.yaml" in output, output[-2000:]


@pytest.mark.parametrize("changes, message", [
    ({"split": {"val": 0.5, "test": 0.5}}, "a sum below 1"),
    ({"split": {"val": float("nan")}}, "a finite number"),
    ({"split": {"test": float("inf")}}, "a finite number"),
])
def test_refused_split_keeps_data_split(trained: Path, changes: dict, message: str) -> None:
    with params_text(trained, with_changes(trained, changes)):
        refused(trained, "split", message, DATA_OUTS + TRAIN_OUTS)


def test_an_empty_test_split_is_refused_before_any_training(trained: Path) -> None:
    with params_text(trained, with_changes(trained, {"split": {"test": 0}})):  # val: test_splitting
        output = refused(trained, "train_cnn", "params.yaml: split.test = 0", DATA_OUTS + TRAIN_OUTS)
    assert "Running stage 'train_cnn'" not in output


def test_train_epochs_0_keeps_models_and_curves(trained: Path) -> None:
    with params_text(trained, with_changes(trained, {"train": {"epochs": 0}})):
        refused(trained, "train_cnn", "train.epochs = 0 is not allowed", DATA_OUTS + TRAIN_OUTS)
    assert (trained / "plots/cnn_transfer/train/plots/metrics/val/loss.tsv").is_file()


def test_metrics_are_flat_and_shown_and_the_record_describes_its_input(trained: Path) -> None:
    shown = json.loads(run(trained, "dvc", "metrics", "show", "--json", "metrics/fetch.json",
                           "metrics/clean.json", "metrics/split.json").stdout)   # counters: targets
    data = next(iter(shown.values()))["data"]
    fetch = data["metrics/fetch.json"]["data"]
    clean = data["metrics/clean.json"]["data"]
    split = data["metrics/split.json"]["data"]
    assert set(fetch) == {"files", "classes", "skipped", "renamed"}
    assert set(clean) == {"kept", "classes", "removed", "converted"}
    assert {"train", "val", "test", "classes", "near_duplicate_groups"} <= set(split)
    assert not any(isinstance(v, dict) for v in split.values())
    record = json.loads((trained / "models/cnn_finetuned/record.json").read_text())
    assert record["input"]["max_side"] == 256 and record["input"]["resize"] == "bilinear antialias"
    again = run(trained, "dvc", "repro", "train_cnn")
    assert stages_run(again.stdout) == ["fetch"], "all up to date (fetch runs, rewriting nothing)"
    assert "unchanged since the last fetch" in again.stderr


# --- a folder source with hostile names and links ------------------------------------------------

HARD_CLASSES = ("NA", "None", "null", "nan", "cat")  # pandas reads the first four as NaN by default
CAFE_NFC, CAFE_NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
# a blank class folder, the same name in NFC and NFD, a flat name over 255 bytes
ODD_CLASSES = {" ": "unnamed", CAFE_NFD: CAFE_NFD, CAFE_NFC: f"{CAFE_NFC}~2"}
LONG = ("d" * 200, "e" * 100, "long.png")


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_project_copy

    root = tmp_path_factory.mktemp("folder")
    source = root / "source"
    for k, cls in enumerate(HARD_CLASSES):
        (source / cls / "sub").mkdir(parents=True)
        for i in range(3):
            (source / cls / f"{i}.png").write_bytes(_png(10 * k + i))
        (source / cls / "sub" / "x.png").write_bytes(_png(10 * k + 5))
        (source / cls / "sub__x.png").write_bytes(_png(10 * k + 6))   # the same flat name
    (root / "secret.png").write_bytes(_png(99))
    (source / "cat" / "secret.png").symlink_to(root / "secret.png")
    (source / "cat" / os.fsdecode(b"caf\xe9.png")).write_bytes(_png(98))
    (source / "cat" / "._0.png").write_bytes(b"\0\5\26\7")
    for k, odd in enumerate(ODD_CLASSES):
        (source / odd).mkdir()
        for i in range(3):
            (source / odd / f"{i}.png").write_bytes(_png(200 + 10 * k + i))
    (source / " " / "cat").write_bytes(_png(250))  # a file named like a class, in the blank one
    (source / "cat" / LONG[0] / LONG[1]).mkdir(parents=True)
    (source / "cat").joinpath(*LONG).write_bytes(_png(251))
    project = make_project_copy(root / "project")
    (project / "params.yaml").write_text(with_changes(project, {
        **TINY, "dataset": {"source": str(source)}, "clean": {"min_per_class": 2}}))
    commit(project, "folder source")
    run(project, "dvc", "repro", "split")
    commit(project, "split")
    return project


def test_hard_class_names_survive_to_the_labels(folder_project: Path) -> None:
    labels = json.loads((folder_project / "data/split/labels.json").read_text())["classes"]
    expected = [*HARD_CLASSES, *ODD_CLASSES.values()]
    assert sorted(labels) == sorted(expected)
    for split in ("train", "val", "test"):
        df = pd.read_csv(folder_project / f"data/split/{split}.csv", keep_default_na=False)
        assert set(df["class"]) <= set(expected)


def test_collisions_links_and_names_are_counted_not_lost(folder_project: Path) -> None:
    metrics = json.loads((folder_project / "metrics/fetch.json").read_text())
    assert metrics["renamed"] == {"name_collision": len(HARD_CLASSES) + 1, "duplicate_entry": 0,
                                  "non_utf8_name": 1, "blank_name": 1, "long_name": 1,
                                  "unsafe_name": 0}
    assert metrics["skipped"]["link_outside"] == 1 and metrics["skipped"]["appledouble"] == 1
    assert metrics["files"] == 5 * len(HARD_CLASSES) + 1 + 3 * len(ODD_CLASSES) + 1 + 1
    rejected = pd.read_csv(folder_project / "metrics/fetch_rejected.csv", keep_default_na=False)
    assert "cat/secret.png" in set(rejected["source"])
    raw = folder_project / "data/raw"
    assert _png(99) not in {p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    assert (raw / "cat" / "café.png").is_file()
    assert (raw / "unnamed" / "cat").read_bytes() == _png(250)
    assert max(len(os.fsencode(p.name)) for p in raw.rglob("*")) <= 255
    by_reason = rejected.set_index("reason")
    assert by_reason.loc["blank_name", "source"] == " "
    assert by_reason.loc["long_name", "source"] == "/".join(("cat", *LONG))
    status = run(folder_project, "dvc", "status", "split")  # a non-UTF-8 name broke every dvc call
    assert "changed" not in status.stdout


def test_single_class_after_cleaning_is_refused_and_keeps_data_clean(folder_project: Path,
                                                                     tmp_path: Path) -> None:
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    for i in range(4):
        (one / "only" / f"{i}.png").write_bytes(_png(50 + i))
    changes = {"dataset": {"source": str(one)}, "clean": {"min_per_class": 2}}
    with params_text(folder_project, with_changes(folder_project, changes)):
        refused(folder_project, "clean", "only one class is left after cleaning: 'only'",
                ("data/clean", "data/split", "metrics/clean.json", "metrics/split.json"))
    run(folder_project, "dvc", "checkout", "--force", "data/raw")  # back to the committed raw


def test_stale_temps_of_a_killed_run_are_removed(folder_project: Path) -> None:
    data = folder_project / "data"
    stale = [data / ".clean.tmp-k2j_x9", data / ".raw.tmp-p4194999-a", data / ".extract-abc"]
    for d in stale:
        d.mkdir()
        (d / "big.bin").write_bytes(b"\0" * 1000)
    run(folder_project, "dvc", "repro", "--force", "--single-item", "fetch")
    run(folder_project, "dvc", "repro", "--force", "--single-item", "clean")
    assert not any(d.exists() for d in stale)
    assert sorted(p.name for p in data.iterdir()) == ["clean", "raw", "split"]
