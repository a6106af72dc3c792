"""fetch loses nothing silently: collisions, duplicate tar entries, non-UTF-8 names, links, skips
by reason, archive size and entry-count guards, empty entries, stale temporary folders, and a
source that overlaps the project's own data/."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vitbench.models.registry import section_with
from vitbench.data.archives import ExtractLimits, safe_extract
from vitbench.data.freshness import fetch_if_changed
from vitbench.data.sources import fetch_dataset
from vitbench.core.errors import ConfigError, FetchError
from vitbench.core.fsutil import atomic_dir, remove_stale_temps
from vitbench.core.paths import Paths


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, 90, 160)).save(buf, "PNG")
    return buf.getvalue()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fetch(source: Path, paths: Paths, **kw: object) -> dict:
    return fetch_dataset(section_with("dataset", source=str(source), **kw), seed=0, paths=paths)


def _rejected(paths: Paths) -> pd.DataFrame:
    return pd.read_csv(paths.metrics / "fetch_rejected.csv", keep_default_na=False)


def test_flattening_collision_keeps_both_and_counts_it(tmp_path: Path) -> None:
    src, paths = tmp_path / "src", Paths(tmp_path / "p")
    (src / "cat" / "sub").mkdir(parents=True)
    (src / "cat" / "sub" / "x.png").write_bytes(_png(1))
    (src / "cat" / "sub__x.png").write_bytes(_png(2))
    (src / "cat" / "SUB__X.PNG").write_bytes(_png(3))  # same name to a case-insensitive disk
    (src / "dog").mkdir()
    (src / "dog" / "a.png").write_bytes(_png(4))
    summary = _fetch(src, paths)
    got = _files(paths.raw)
    assert sorted(got.values()) == sorted([_png(1), _png(2), _png(3), _png(4)]), "no image lost"
    assert len({k.casefold() for k in got}) == 4
    metrics = json.loads(paths.metrics_json("fetch").read_text())
    assert metrics["renamed"]["name_collision"] == 2 == summary["report"]["renamed"]["name_collision"]
    assert metrics["files"] == 4 and metrics["classes"] == 2


def test_duplicate_tar_entries_are_all_kept_and_counted(tmp_path: Path) -> None:
    archive, paths = tmp_path / "dup.tar.gz", Paths(tmp_path / "p")
    with tarfile.open(archive, "w:gz") as tar:
        for seed in (1, 2, 3):
            info = tarfile.TarInfo("cat/same.png")
            info.size = len(_png(seed))
            tar.addfile(info, io.BytesIO(_png(seed)))
        info = tarfile.TarInfo("dog/d.png")
        info.size = len(_png(9))
        tar.addfile(info, io.BytesIO(_png(9)))
    _fetch(archive, paths)
    assert sorted(_files(paths.raw / "cat").values()) == sorted([_png(1), _png(2), _png(3)])
    rejected = _rejected(paths)
    assert list(rejected["reason"]) == ["duplicate_entry", "duplicate_entry"]
    assert json.loads(paths.metrics_json("fetch").read_text())["renamed"]["duplicate_entry"] == 2


def test_duplicate_zip_entries_are_all_kept(tmp_path: Path) -> None:
    archive, paths = tmp_path / "dup.zip", Paths(tmp_path / "p")
    import warnings

    with warnings.catch_warnings(), zipfile.ZipFile(archive, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we want
        zf.writestr("cat/same.png", _png(1))
        zf.writestr("cat/same.png", _png(2))
        zf.writestr("dog/d.png", _png(3))
    _fetch(archive, paths)
    assert sorted(_files(paths.raw / "cat").values()) == sorted([_png(1), _png(2)])


def test_non_utf8_names_are_reencoded_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src, paths = tmp_path / "src", Paths(tmp_path / "p")
    bad_class = os.fsdecode(b"caf\xe9")
    (src / bad_class).mkdir(parents=True)
    (src / bad_class / os.fsdecode(b"cr\xe8me.png")).write_bytes(_png(1))
    (src / "dog").mkdir()
    (src / "dog" / "a.png").write_bytes(_png(2))
    _fetch(src, paths)
    names = [p.relative_to(paths.raw).as_posix() for p in paths.raw.rglob("*")]
    for name in names:
        name.encode("utf-8")  # raises on a surrogate-escaped (non-UTF-8) name
    assert "café/crème.png" in names
    assert sorted(_rejected(paths)["reason"]) == ["non_utf8_name", "non_utf8_name"]
    assert "caf\\xe9" in caplog.text, "the log names the file as its bytes are"


def test_links_and_junk_are_skipped_by_reason_and_never_followed_outside(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0\n")
    src, paths = tmp_path / "src", Paths(tmp_path / "p")
    (src / "cat").mkdir(parents=True)
    (src / "cat" / "ok.png").write_bytes(_png(1))
    (src / "cat" / ".DS_Store").write_bytes(b"x")
    (src / "cat" / "._ok.png").write_bytes(b"x")
    (src / "cat" / "passwd.png").symlink_to(outside)
    (src / "cat" / "gone.png").symlink_to(tmp_path / "nope.png")
    (src / "cat" / "inside.png").symlink_to(src / "cat" / "ok.png")
    (src / "cat" / "loop").symlink_to(src / "cat", target_is_directory=True)
    os.mkfifo(src / "cat" / "pipe.png")
    (src / "dog").mkdir()
    (src / "dog" / "d.png").write_bytes(_png(2))
    (src / "empty").mkdir()
    (src / "notes.txt").write_text("loose")
    (src / "__MACOSX").mkdir()
    summary = _fetch(src, paths)
    assert summary["counts"] == {"cat": 2, "dog": 1}, "ok.png and the in-source link inside.png"
    assert b"root:x" not in b"".join(_files(paths.raw).values())
    metrics = json.loads(paths.metrics_json("fetch").read_text())
    assert metrics["skipped"] == {"hidden": 1, "appledouble": 2, "loose_file": 1, "empty_class": 1,
                                  "dangling_link": 1, "symlinked_folder": 1, "link_outside": 1,
                                  "not_regular": 1, "empty_file": 0}
    rejected = _rejected(paths)
    assert len(rejected) == 9 and set(rejected.columns) == {"source", "class", "reason", "detail"}
    row = rejected[rejected["reason"] == "link_outside"].iloc[0]
    assert row["source"] == "cat/passwd.png" and str(outside) in row["detail"]


def _bomb(path: Path, mb: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/ok.png", _png(1))
        zf.writestr("cat/zeros.bin", b"\0" * (mb << 20))
    return path


def test_zip_bomb_is_refused_from_its_headers(tmp_path: Path) -> None:
    archive = _bomb(tmp_path / "bomb.zip", 50)
    assert archive.stat().st_size < 200_000
    with pytest.raises(FetchError, match=r"compression ratio of \d+ above dataset.max_ratio \(200\)"):
        safe_extract(archive, tmp_path / "out", ExtractLimits.of(section_with("dataset")))
    assert not any((tmp_path / "out").rglob("*")), "nothing written"
    safe_extract(archive, tmp_path / "ok", ExtractLimits(max_mb=100, max_ratio=10_000, max_entries=10))
    assert (tmp_path / "ok" / "cat" / "zeros.bin").stat().st_size == 50 << 20


def test_archive_over_max_extract_mb_is_refused(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "p")
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"cat/{i}.bin")
            info.size = 1 << 20
            tar.addfile(info, io.BytesIO(b"\1" * info.size))
    with pytest.raises(FetchError, match=r"more than 2 MB uncompressed \(dataset.max_extract_mb\)"):
        _fetch(archive, paths, max_extract_mb=2)
    assert not paths.raw.exists()


def test_missing_source_is_refused_by_fetch_not_by_config(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "p")
    cfg = section_with("dataset", source=str(tmp_path / "nowhere"))  # valid: config does no I/O
    with pytest.raises(ConfigError, match="dataset.source .* that path does not exist"):
        fetch_dataset(cfg, seed=0, paths=paths)
    assert not paths.root.exists()


def test_stale_temps_of_dead_processes_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "data" / "raw"
    target.parent.mkdir()
    dead = 2**22 + 12345  # above the default pid_max: never a live process
    stale = [target.parent / f".raw.tmp-p{dead}-abc", target.parent / ".raw.tmp-k2j_x9",
             target.parent / f".raw.old-p{dead}"]
    live = target.parent / f".raw.tmp-p{os.getppid()}-live"
    other = target.parent / ".clean.tmp-zzz"
    for d in [*stale, live, other]:
        d.mkdir()
        (d / "f").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("y")
    assert all(not d.exists() for d in stale)
    assert live.exists() and other.exists(), "a running writer's and other outputs' temps are kept"
    assert remove_stale_temps(target.parent / "clean") == [other]


def test_fetch_removes_legacy_extract_folders(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "p")
    legacy = paths.raw.parent / ".extract-abc123"
    legacy.mkdir(parents=True)
    fetch_if_changed(section_with("dataset", source="digits"), seed=0, paths=paths)
    assert sorted(p.name for p in paths.raw.parent.iterdir()) == ["raw"]


# --- truncated tars, blank, look-alike and over-long names ---------------------------------------

def _plain_tar(path: Path, n: int) -> bytes:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            info = tarfile.TarInfo(f"{'cat' if i % 2 else 'dog'}/{i}.png")
            info.size = len(_png(i))
            tar.addfile(info, io.BytesIO(_png(i)))
    return path.read_bytes()


def test_tar_cut_at_a_member_boundary_is_refused_naming_it(tmp_path: Path) -> None:
    whole = _plain_tar(tmp_path / "whole.tar", 4)
    with tarfile.open(tmp_path / "whole.tar") as tar:
        third = tar.getmembers()[3].offset  # where the 4th header starts: a member boundary
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[:third])
    with tarfile.open(cut) as tar:
        assert len(tar.getmembers()) == 3, "tarfile itself reads it as a valid, smaller archive"
    paths = Paths(tmp_path / "p")
    with pytest.raises(FetchError, match=f"truncated archive {cut}: it ends after 3 entries"):
        _fetch(cut, paths)
    assert not paths.raw.exists()


def test_blank_class_folder_is_renamed_counted_and_a_file_named_like_a_class_is_kept(
        tmp_path: Path) -> None:
    src, paths = tmp_path / "src", Paths(tmp_path / "p")
    for cls in (" ", "cat", "unnamed"):
        (src / cls).mkdir(parents=True)
        (src / cls / "a.png").write_bytes(_png(len(cls) + ord(cls[0])))
    (src / " " / "cat").write_bytes(_png(7))  # a file whose name is a class name
    summary = _fetch(src, paths)
    assert summary["counts"] == {"cat": 1, "unnamed": 1, "unnamed~2": 2}
    assert (paths.raw / "unnamed~2" / "cat").read_bytes() == _png(7)
    assert summary["report"]["renamed"]["blank_name"] == 1
    rows = _rejected(paths)
    assert rows[rows["reason"] == "blank_name"][["source", "class"]].values.tolist() == [[" ", "unnamed~2"]]


def test_nfc_and_nfd_class_folders_are_two_reported_classes(tmp_path: Path) -> None:
    import unicodedata

    src, paths = tmp_path / "src", Paths(tmp_path / "p")
    for k, form in enumerate(("NFC", "NFD")):
        (src / unicodedata.normalize(form, "café")).mkdir(parents=True)
        (src / unicodedata.normalize(form, "café") / "a.png").write_bytes(_png(k))
    summary = _fetch(src, paths)
    names = sorted(unicodedata.normalize("NFC", c) for c in summary["classes"])
    assert names == ["café", "café~2"] and summary["files"] == 2
    assert summary["report"]["renamed"]["name_collision"] == 1
    assert "Unicode normalization" in _rejected(paths)["detail"].iloc[0]


def test_flattened_names_over_255_bytes_are_shortened_unique_and_reported(tmp_path: Path) -> None:
    src, paths = tmp_path / "src", Paths(tmp_path / "p")
    deep = src / "cat" / ("d" * 200) / ("é" * 100)   # 200 + 2 + 200 + 6 bytes once flattened
    deep.mkdir(parents=True)
    for k, name in enumerate(("x.png", "X.png")):
        (deep / name).write_bytes(_png(k))
    (src / "cat" / (("n" * 250) + ".png")).write_bytes(_png(2))  # 254 bytes: fits
    (src / "cat" / (("N" * 250) + ".png")).write_bytes(_png(3))  # its case twin gets `~2`: 256
    (src / "dog").mkdir()
    (src / "dog" / "a.png").write_bytes(_png(4))
    summary = _fetch(src, paths)
    stored = [p for p in (paths.raw / "cat").iterdir()]
    assert sorted(p.read_bytes() for p in stored) == sorted(_png(k) for k in range(4)), "none lost"
    assert all(len(os.fsencode(p.name)) <= 255 for p in stored)
    assert all(p.suffix == ".png" for p in stored)
    assert summary["report"]["renamed"]["long_name"] == 3
    details = _rejected(paths).query("reason == 'long_name'")["detail"]
    assert details.str.contains("over the file-system limit of 255").all()


# --- entry counts, empty entries and sources inside the project ---------------------------------

def _archive(path: Path, entries: dict[str, bytes]) -> Path:
    """A .tar.gz or .zip (by `path`'s suffix) of `entries` (name -> bytes), no folder entries."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in entries.items():
                zf.writestr(name, data)
        return path
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _empties(n: int) -> dict[str, bytes]:
    return {f"cat/empty{i}.png": b"" for i in range(n)}


@pytest.mark.parametrize("name", ["many.tar.gz", "many.zip"])
def test_archive_over_max_entries_is_refused_naming_the_key(name: str, tmp_path: Path) -> None:
    archive, paths = _archive(tmp_path / name, {**_empties(30), "dog/d.png": _png(1)}), Paths(tmp_path / "p")
    with pytest.raises(FetchError, match=r"more than 20 entries \(dataset.max_entries\); raise "
                                         r"dataset.max_entries"):
        _fetch(archive, paths, max_entries=20)
    assert not paths.raw.exists()
    assert _fetch(archive, paths, max_entries=31)["files"] == 1, "31 entries pass a limit of 31"


@pytest.mark.parametrize("name", ["empty.tar.gz", "empty.zip"])
def test_empty_archive_entries_are_not_extracted_but_counted(name: str, tmp_path: Path) -> None:
    entries = {**_empties(25), "cat/c.png": _png(1), "dog/d.png": _png(2), "void/e.png": b""}
    archive, paths = _archive(tmp_path / name, entries), Paths(tmp_path / "p")
    summary = _fetch(archive, paths)
    assert _files(paths.raw) == {"cat/c.png": _png(1), "dog/d.png": _png(2)}
    assert summary["report"]["skipped"]["empty_file"] == 26
    rows = _rejected(paths)
    assert sorted(rows["source"]) == sorted(k for k, v in entries.items() if not v)
    assert set(rows["reason"]) == {"empty_file"}


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed TINY project after `dvc repro fetch` of the synthetic set."""
    from conftest import tiny_project

    return tiny_project(tmp_path_factory.mktemp("fetched"), "fetch")


@pytest.mark.slow
def test_archive_over_max_entries_is_refused_by_dvc_repro(fetched: Path, tmp_path: Path) -> None:
    from test_refusals_dvc import params_text, refused, with_changes

    archive = _archive(tmp_path / "many.tar.gz", {**_empties(40), "dog/d.png": _png(1)})
    with params_text(fetched, with_changes(fetched, {"dataset": {"source": str(archive),
                                                                 "max_entries": 30}})):
        refused(fetched, "fetch", "more than 30 entries (dataset.max_entries)",
                ("data", "metrics"))


@pytest.mark.slow
@pytest.mark.parametrize("source", [".", "data/raw", ".."])
def test_a_source_overlapping_the_projects_data_is_refused(source: str, fetched: Path) -> None:
    from test_refusals_dvc import params_text, refused, with_changes

    with params_text(fetched, with_changes(fetched, {"dataset": {"source": source}})):
        output = refused(fetched, "fetch", f"dataset.source = {source!r} is not allowed",
                         ("data", "metrics"))
    assert "outside" in output
