"""Class names in fetch: whatever a class folder is called, its class is one safe folder inside
data/raw, unique, and every name that is not the plain cleaning of the folder's is reported."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import unicodedata
from pathlib import Path, PurePosixPath

import pandas as pd
import pytest
from dvc_project import TINY, commit, run, set_params
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import Server
from PIL import Image

from vitbench.data.fetch_report import FetchReport, shown
from vitbench.data.folders import class_names

ROOT = Path("/data/raw")   # only for path arithmetic: nothing is written there
WORDNET = re.compile(r"n\d{8}[-_ ](.+)")

# Folder names that broke fetch, and the pieces of others like them.
ESCAPING = ("n00000001-..", "n00000002-.hidden", "n00000003-.")
TRICKY = st.sampled_from([".", "..", "...", ".hidden", " ..", " .x", "/", "\\", "a/b", "..\\..",
                          "\0", " ", "\t", "~", "unnamed", "unnamed~2", "n00000001", "Cat", "cat"])
PREFIX = st.sampled_from(["", "", "n00000001-", "n12345678_", "n02085620 ", " ", "."])
PART = st.one_of(
    TRICKY,
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),   # any Unicode but surrogates
    st.binary(min_size=1, max_size=12).map(os.fsdecode),   # bytes as os.listdir gives them
    st.text(st.sampled_from("ab.é/ "), min_size=120, max_size=300),   # over 255 bytes
)
NAME = st.builds(lambda prefix, a, b: prefix + a + b, PREFIX, PART, PART)


def assert_one_safe_folder(name: str) -> None:
    """`name` is one visible, UTF-8 folder name that stays inside data/raw."""
    assert name and name == name.strip(), repr(name)
    assert not name.startswith("."), repr(name)
    assert not {"/", "\\", "\0"} & set(name), repr(name)
    assert len(name.encode("utf-8")) <= 255, repr(name)   # encode raises on a non-UTF-8 name
    assert PurePosixPath(name).parts == (name,)
    assert (ROOT / name).resolve().parent == ROOT


def plain_cleanings(raw: str) -> set[str]:
    """What a folder name may be stored as without a report: itself or without its WordNet id."""
    text = raw.strip()
    match = WORDNET.fullmatch(text)
    return {text, match.group(1).strip()} if match else {text}


@settings(max_examples=200, deadline=None)
@given(st.lists(NAME, min_size=1, max_size=8, unique=True))
def test_every_class_name_is_one_safe_unique_folder_and_changes_are_reported(
        folder_names: list[str]) -> None:
    report = FetchReport()
    names = class_names(folder_names, report)
    assert sorted(names) == sorted(folder_names)
    for name in names.values():
        assert_one_safe_folder(name)
    folded = {unicodedata.normalize("NFC", n).casefold() for n in names.values()}
    assert len(folded) == len(names), "unique, also to a case-insensitive disk"
    reported = {row[0] for row in report.rows}
    for raw, name in names.items():
        assert name in plain_cleanings(raw) or shown(raw) in reported, (raw, name)


def test_the_names_that_escaped_keep_their_wordnet_id_and_are_reported() -> None:
    report = FetchReport()
    names = class_names([*ESCAPING, " ..", "a\\b", "Manifest.CSV"], report)
    assert names == {"n00000001-..": "n00000001-..", "n00000002-.hidden": "n00000002-.hidden",
                     "n00000003-.": "n00000003-.", " ..": "unnamed", "a\\b": "a_b",
                     "Manifest.CSV": "Manifest.CSV_"}
    assert {row[2] for row in report.rows} == {"unsafe_name"} and len(report.rows) == 6


# --- end to end: dvc repro fetch from a folder, an archive and a URL ------------------------------

CLASSES = (*ESCAPING, "cat")
PER_CLASS = 3


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, 90, 160)).save(buf, "PNG")
    return buf.getvalue()


def _source_tree(root: Path) -> Path:
    for i, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for k in range(PER_CLASS):
            (root / cls / f"{i}_{k}.png").write_bytes(_png(10 * i + k))
    return root


def _tar_gz(path: Path, src: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for cls in CLASSES:
            tar.add(src / cls, arcname=cls)
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _fetch_in_project(project: Path, source: str) -> None:
    """`dvc repro fetch` of `source` on TINY params; asserts that every image is in its own class
    folder of data/raw, nothing else was written under data/, and each rename is reported."""
    set_params(project, {**TINY, "dataset": {**TINY["dataset"], "source": source}})
    commit(project, "source")
    run(project, "dvc", "repro", "fetch")
    data = _files(project / "data")
    assert {k for k in data if not k.startswith("raw/")} == set(), "nothing outside data/raw"
    raw = project / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(CLASSES)
    for i, cls in enumerate(CLASSES):
        assert sorted(_files(raw / cls).values()) == sorted(_png(10 * i + k) for k in range(PER_CLASS))
    metrics = json.loads((project / "metrics" / "fetch.json").read_text())
    assert metrics["files"] == PER_CLASS * len(CLASSES) and metrics["classes"] == len(CLASSES)
    assert metrics["renamed"]["unsafe_name"] == len(ESCAPING)
    rejected = pd.read_csv(project / "metrics" / "fetch_rejected.csv", keep_default_na=False)
    assert sorted(rejected["source"]) == sorted(ESCAPING)


@pytest.mark.slow
def test_escaping_class_names_from_a_folder_stay_in_data_raw(project: Path, tmp_path: Path) -> None:
    _fetch_in_project(project, str(_source_tree(tmp_path / "src")))


@pytest.mark.slow
def test_escaping_class_names_from_an_archive_stay_in_data_raw(project: Path, tmp_path: Path) -> None:
    archive = _tar_gz(tmp_path / "classes.tar.gz", _source_tree(tmp_path / "src"))
    _fetch_in_project(project, str(archive))


@pytest.mark.slow
def test_escaping_class_names_from_a_url_stay_in_data_raw(project: Path, tmp_path: Path,
                                                           server: Server) -> None:
    archive = _tar_gz(tmp_path / "classes.tar.gz", _source_tree(tmp_path / "src"))
    server.routes["/classes.tar.gz"] = [(200, archive.read_bytes())]
    _fetch_in_project(project, f"{server.url}/classes.tar.gz")
