"""fetch runs on every `dvc repro` (dvc.yaml: always_changed) and rewrites nothing while its
source is unchanged; a folder edited in place is seen, and the stages after fetch re-run only
when data/raw really changed."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from vitbench.models.registry import section_with
from vitbench.data.freshness import fetch_if_changed
from vitbench.core.paths import Paths


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, 60, 9)).save(buf, "PNG")
    return buf.getvalue()


def _folder(root: Path, classes: dict[str, int], first: int = 0) -> Path:
    for k, (cls, n) in enumerate(classes.items(), start=first):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i}.png").write_bytes(_png(10 * k + i))
    return root


def _inodes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_ino for p in root.rglob("*")}


def test_folder_source_edits_are_seen_and_an_unchanged_one_is_not_rewritten(tmp_path: Path) -> None:
    src, paths = _folder(tmp_path / "src", {"cat": 2, "dog": 2}), Paths(tmp_path / "p")
    cfg = section_with("dataset", source=str(src))
    assert fetch_if_changed(cfg, 0, paths)["counts"] == {"cat": 2, "dog": 2}
    raw, metrics = _inodes(paths.raw), paths.metrics_json("fetch").stat().st_mtime_ns
    assert fetch_if_changed(cfg, 1, paths) is None, "unchanged (the seed is not a folder's input)"
    assert _inodes(paths.raw) == raw and paths.metrics_json("fetch").stat().st_mtime_ns == metrics
    _folder(src, {"bird": 2}, first=2)
    assert fetch_if_changed(cfg, 0, paths)["counts"] == {"bird": 2, "cat": 2, "dog": 2}
    (src / "cat" / "1.png").unlink()
    assert fetch_if_changed(cfg, 0, paths)["counts"] == {"bird": 2, "cat": 1, "dog": 2}
    (src / "empty").mkdir()
    assert fetch_if_changed(cfg, 0, paths)["report"]["skipped"]["empty_class"] == 1
    (paths.raw / "dog" / "0.png").unlink()  # data/raw changed behind fetch's back
    assert fetch_if_changed(cfg, 0, paths)["counts"]["dog"] == 2


def test_synthetic_archive_and_url_sources_are_not_fetched_again(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    paths = Paths(tmp_path / "p")
    synthetic = section_with("dataset", source="synthetic", synthetic={"per_class": 1, "image_size": 40})
    assert fetch_if_changed(synthetic, 0, paths) is not None
    assert fetch_if_changed(synthetic, 0, paths) is None
    assert fetch_if_changed(synthetic, 1, paths) is not None, "the seed draws the images"
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(_folder(tmp_path / "tree", {"cat": 1, "dog": 1}), arcname=".")
    cfg = section_with("dataset", source=str(archive))
    assert fetch_if_changed(cfg, 0, paths) is not None and fetch_if_changed(cfg, 0, paths) is None
    os.utime(archive, ns=(1, 1))  # another archive copied to the same path
    assert fetch_if_changed(cfg, 0, paths) is not None
    server.routes["/a.tar"] = [(200, archive.read_bytes())]
    url = section_with("dataset", source=f"{server.url}/a.tar")
    assert fetch_if_changed(url, 0, paths) is not None and fetch_if_changed(url, 0, paths) is None
    assert server.hits["/a.tar"] == 1


@pytest.mark.slow
def test_dvc_repro_sees_a_folder_edited_in_place_and_reruns_clean_only_on_real_changes(
        tmp_path: Path) -> None:
    from conftest import make_project_copy
    from dvc_project import commit, run, set_params, stages_run

    src = _folder(tmp_path / "src", {"cat": 3, "dog": 3})
    project = make_project_copy(tmp_path / "project")
    set_params(project, {"dataset": {"source": str(src)}, "clean": {"min_per_class": 2, "min_side": 8}})
    commit(project, "folder source")

    def repro() -> list[str]:
        return stages_run(run(project, "dvc", "repro", "clean").stdout)

    assert repro() == ["fetch", "clean"]
    os.utime(src / "cat" / "0.png")  # touched, same bytes: fetched again, data/raw identical
    assert repro() == ["fetch"], "data/raw did not change: clean is not re-run"
    _folder(src, {"bird": 3}, first=2)
    (src / "dog" / "2.png").unlink()
    assert repro() == ["fetch", "clean"]
    assert sorted(p.name for p in (project / "data/clean").iterdir() if p.is_dir()) == \
        ["bird", "cat", "dog"]
    assert sorted(p.name for p in (project / "data/raw/dog").iterdir()) == ["0.png", "1.png"]
    assert run(project, "dvc", "status", "clean").stdout.strip() == "Data and pipelines are up to date."
