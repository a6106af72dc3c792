"""fetch: synthetic, digits, folders, archives (including hostile ones) and HTTP downloads."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from loopback import Server
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from PIL import Image

from vitbench.core.config import SOURCE_PARAMS, merge, read_params
from vitbench.models.registry import section_with
import vitbench.core.download
from vitbench.data import sources
from vitbench.data.archives import ExtractLimits
from vitbench.data.sources import clean_class_name, download, fetch_dataset, safe_extract
from vitbench.core.errors import FetchError
from vitbench.core.paths import Paths

REPO = Path(__file__).resolve().parents[1]
DOG_CLASSES = {"n02085620-Chihuahua": 3, "n02085782-Japanese_spaniel": 2}


# --- helpers ------------------------------------------------------------------------------------------

def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, 90, 160)).save(buf, "PNG")
    return buf.getvalue()


def _dog_tree(root: Path) -> Path:
    """A Stanford Dogs-like tree: a wrapper `Images/`, WordNet-prefixed classes, junk files."""
    images = root / "Images"
    for k, (cls, n) in enumerate(DOG_CLASSES.items()):
        for i in range(n):
            (images / cls).mkdir(parents=True, exist_ok=True)
            (images / cls / f"{cls}_{i}.png").write_bytes(_png(10 * k + i))
        (images / cls / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "README.txt").write_text("Stanford Dogs-like sample\n")
    (images / "stray.png").write_bytes(_png(99))
    return root


def _expected_tree() -> dict[str, int]:
    return {"Chihuahua": 3, "Japanese_spaniel": 2}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tar(path: Path, src: Path, mode: str) -> Path:
    with tarfile.open(path, mode) as tar:
        tar.add(src, arcname=".")
    return path


def _zip(path: Path, src: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """A project root whose data/raw already holds a previous fetch."""
    p = Paths(tmp_path / "project")
    (p.raw / "old_class").mkdir(parents=True)
    (p.raw / "old_class" / "keep.png").write_bytes(_png(1))
    return p


def _assert_untouched(p: Paths) -> None:
    """The previous data/raw is intact and no temporary folders were left behind."""
    assert _tree(p.raw) == {"old_class/keep.png": _png(1)}
    assert sorted(x.name for x in p.raw.parent.iterdir()) == ["raw"]


def _dataset(source: str | Path, sha256: str | None = None) -> Any:
    return section_with("dataset", source=str(source), sha256=sha256)


# --- names, synthetic, digits, folders ------------------------------------------------------------------

@pytest.mark.parametrize(("name", "clean"), [
    ("n02085620-Chihuahua", "Chihuahua"),
    ("n02086240-Shih-Tzu", "Shih-Tzu"),
    ("n02085782_Japanese_spaniel", "Japanese_spaniel"),
    ("cat", "cat"),
    ("n02085620", "n02085620"),
    ("n123-short", "n123-short"),
    (" panda ", "panda"),
])
def test_clean_class_name(name: str, clean: str) -> None:
    assert clean_class_name(name) == clean


def test_synthetic_replaces_previous_raw(paths: Paths) -> None:
    cfg = section_with("dataset", synthetic={"per_class": 2, "image_size": 48})
    summary = fetch_dataset(cfg, seed=3, paths=paths)
    assert summary["kind"] == "synthetic"
    assert summary["classes"] == sorted(p.name for p in paths.raw.iterdir()) and len(summary["classes"]) == 10
    assert summary["files"] == sum(1 for p in paths.raw.rglob("*") if p.is_file())
    assert not (paths.raw / "old_class").exists()
    assert sorted(x.name for x in paths.raw.parent.iterdir()) == ["raw"]


def test_digits(paths: Paths) -> None:
    summary = fetch_dataset(_dataset("digits"), seed=0, paths=paths)
    assert summary["classes"] == [str(d) for d in range(10)]
    assert summary["files"] == 1797 == sum(1 for p in paths.raw.rglob("*.png"))
    with Image.open(next((paths.raw / "7").iterdir())) as image:
        assert image.mode == "L" and image.size == (32, 32)


def test_folder_with_wrapper_wordnet_names_and_junk(paths: Paths, tmp_path: Path) -> None:
    source = _dog_tree(tmp_path / "dogs")
    before = _tree(source)
    summary = fetch_dataset(_dataset(source), seed=0, paths=paths)
    assert summary["counts"] == _expected_tree()
    assert summary["report"]["skipped"]["loose_file"] == 2
    assert summary["report"]["skipped"]["hidden"] == 2
    rejected = pd.read_csv(paths.metrics / "fetch_rejected.csv", keep_default_na=False)
    assert sorted(rejected["reason"]) == ["hidden", "hidden", "loose_file", "loose_file"]
    assert "README.txt" in set(rejected["source"])
    assert _tree(paths.raw)["Chihuahua/n02085620-Chihuahua_0.png"] == _png(0)
    assert _tree(source) == before, "files are copied, never moved"


def test_folder_flattens_nested_folders_and_keeps_clashing_names(paths: Paths, tmp_path: Path) -> None:
    source = tmp_path / "src"
    for cls in ("n00000001-dog", "n00000002-dog", "cat"):
        (source / cls / "sub").mkdir(parents=True)
        (source / cls / "sub" / "a.png").write_bytes(_png(2))
    (source / "cat" / ".hidden_dir").mkdir()
    (source / "cat" / ".hidden_dir" / "b.png").write_bytes(_png(3))
    fetch_dataset(_dataset(source), seed=0, paths=paths)
    assert sorted(_tree(paths.raw)) == [
        "cat/sub__a.png", "n00000001-dog/sub__a.png", "n00000002-dog/sub__a.png"]


def test_folder_without_class_folders_explains_the_layout(paths: Paths, tmp_path: Path) -> None:
    source = tmp_path / "flat"
    source.mkdir()
    (source / "a.png").write_bytes(_png(1))
    with pytest.raises(FetchError, match="one sub-folder per class"):
        fetch_dataset(_dataset(source), seed=0, paths=paths)
    _assert_untouched(paths)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="not found"):
        sources.import_folder(tmp_path / "nope", tmp_path / "dest")


# --- archives -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [".tar", ".tar.gz", ".tgz", ".zip"])
def test_archive_good_path(kind: str, paths: Paths, tmp_path: Path) -> None:
    source = _dog_tree(tmp_path / "dogs")
    archive = tmp_path / f"dogs{kind}"
    if kind == ".zip":
        _zip(archive, source)
    else:
        _tar(archive, source, "w" if kind == ".tar" else "w:gz")
    summary = fetch_dataset(_dataset(archive, _sha(archive).upper()), seed=0, paths=paths)
    assert summary["kind"] == "archive" and summary["counts"] == _expected_tree()
    assert sorted(x.name for x in paths.raw.parent.iterdir()) == ["raw"], "extraction folder removed"
    assert archive.is_file()


def test_archive_checksum_mismatch(paths: Paths, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "dogs.tar.gz", _dog_tree(tmp_path / "dogs"), "w:gz")
    with pytest.raises(FetchError, match=f"expected sha256 {'0' * 64}, got {_sha(archive)}"):
        fetch_dataset(_dataset(archive, "0" * 64), seed=0, paths=paths)
    _assert_untouched(paths)


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """A tar.gz with one good class folder and one hostile `member`."""
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("cat/ok.png")
        good.size = len(_png(1))
        tar.addfile(good, io.BytesIO(_png(1)))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


HOSTILE_TAR = {
    "dotdot": (_info("cat/../../x.png"), "'..'"),
    "absolute": (_info("/tmp/vitbench_evil.png"), "absolute path"),
    "symlink": (_info("cat/link.png", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    "hardlink": (_info("cat/hard.png", tarfile.LNKTYPE, "cat/ok.png"), "hard link"),
    "device": (_info("cat/dev", tarfile.CHRTYPE), "device or FIFO"),
    "fifo": (_info("cat/pipe", tarfile.FIFOTYPE), "device or FIFO"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TAR))
def test_hostile_tar_entries_are_refused(case: str, paths: Paths, tmp_path: Path) -> None:
    member, reason = HOSTILE_TAR[case]
    archive = _tar_with(tmp_path / "evil.tar.gz", member, b"evil" if member.isfile() else b"")
    with pytest.raises(FetchError, match=reason) as err:
        fetch_dataset(_dataset(archive), seed=0, paths=paths)
    assert repr(member.name) in str(err.value), "the message names the entry"
    _assert_untouched(paths)
    assert not (tmp_path / "x.png").exists() and not Path("/tmp/vitbench_evil.png").exists()


def _zip_with(path: Path, name: str, *, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cat/ok.png", _png(1))
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd" if symlink else "evil")
    return path


@pytest.mark.parametrize(("name", "symlink", "reason"), [
    ("../x.png", False, "'..'"),
    ("cat/..\\..\\x.png", False, "'..'"),
    ("/tmp/vitbench_evil.png", False, "absolute path"),
    ("C:/evil.png", False, "absolute path"),
    ("cat/link.png", True, "symbolic link"),
])
def test_hostile_zip_entries_are_refused(name: str, symlink: bool, reason: str, paths: Paths,
                                         tmp_path: Path) -> None:
    archive = _zip_with(tmp_path / "evil.zip", name, symlink=symlink)
    with pytest.raises(FetchError, match=reason) as err:
        fetch_dataset(_dataset(archive), seed=0, paths=paths)
    assert repr(name) in str(err.value)
    _assert_untouched(paths)
    assert not (tmp_path / "x.png").exists()


def test_safe_extract_writes_nothing_when_a_later_entry_is_hostile(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "evil.tar.gz", _info("../late.png"), b"evil")
    with pytest.raises(FetchError):
        safe_extract(archive, tmp_path / "out", ExtractLimits.of(section_with("dataset")))
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("kind", ["truncated.tar.gz", "garbage.zip", "text.tar"])
def test_broken_archives(kind: str, paths: Paths, tmp_path: Path) -> None:
    archive = tmp_path / kind
    if kind == "truncated.tar.gz":
        good = _tar(tmp_path / "good.tar.gz", _dog_tree(tmp_path / "dogs"), "w:gz").read_bytes()
        archive.write_bytes(good[: len(good) // 2])
    elif kind == "garbage.zip":
        archive.write_bytes(b"PK\x03\x04" + b"\x00garbage" * 50)
    else:
        archive.write_text("not an archive at all\n")
    with pytest.raises(FetchError, match="broken archive|not a readable archive"):
        fetch_dataset(_dataset(archive), seed=0, paths=paths)
    _assert_untouched(paths)


# --- HTTP ---------------------------------------------------------------------------------------------------

@pytest.fixture
def archive_bytes(tmp_path: Path) -> bytes:
    return _tar(tmp_path / "dogs.tar.gz", _dog_tree(tmp_path / "dogs"), "w:gz").read_bytes()


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vitbench.core.download, "BACKOFF_SECONDS", 0.01)


def test_url_checksum_match_and_cache_hit(server: Server, archive_bytes: bytes, paths: Paths) -> None:
    server.routes["/dogs.tar.gz"] = [(200, archive_bytes)]
    cfg = _dataset(f"{server.url}/dogs.tar.gz", hashlib.sha256(archive_bytes).hexdigest())
    assert cfg.kind == "url"
    summary = fetch_dataset(cfg, seed=0, paths=paths)
    assert summary["counts"] == _expected_tree()
    cached = list(paths.downloads.iterdir())
    assert [p.read_bytes() for p in cached] == [archive_bytes] and cached[0].name.endswith("-dogs.tar.gz")
    first = _tree(paths.raw)
    fetch_dataset(cfg, seed=0, paths=paths)
    assert server.hits["/dogs.tar.gz"] == 1, "the second fetch downloads nothing"
    assert _tree(paths.raw) == first
    assert sorted(x.name for x in paths.raw.parent.iterdir()) == ["raw"]


def test_url_checksum_mismatch_keeps_nothing(server: Server, archive_bytes: bytes, paths: Paths) -> None:
    server.routes["/dogs.tar.gz"] = [(200, archive_bytes)]
    actual = hashlib.sha256(archive_bytes).hexdigest()
    with pytest.raises(FetchError, match=f"expected sha256 {'a' * 64}, got {actual}"):
        fetch_dataset(_dataset(f"{server.url}/dogs.tar.gz", "a" * 64), seed=0, paths=paths)
    _assert_untouched(paths)
    assert list(paths.downloads.iterdir()) == [], "neither the bad file nor a partial one is cached"


def test_url_404_is_not_retried(server: Server, paths: Paths) -> None:
    url = f"{server.url}/missing.tar.gz"
    with pytest.raises(FetchError, match="HTTP 404") as err:
        fetch_dataset(_dataset(url), seed=0, paths=paths)
    assert url in str(err.value)
    assert server.hits["/missing.tar.gz"] == 1
    _assert_untouched(paths)


def test_url_500_then_200_is_retried(server: Server, archive_bytes: bytes, paths: Paths) -> None:
    server.routes["/dogs.tar.gz"] = [(500, b"oops"), (200, archive_bytes)]
    summary = fetch_dataset(_dataset(f"{server.url}/dogs.tar.gz"), seed=0, paths=paths)
    assert summary["counts"] == _expected_tree()
    assert server.hits["/dogs.tar.gz"] == 2


def test_download_gives_up_after_retries(server: Server, tmp_path: Path) -> None:
    server.routes["/down.zip"] = [(503, b"busy")]
    with pytest.raises(FetchError, match="after 3 attempt"):
        download(f"{server.url}/down.zip", tmp_path / "cache", retries=2)
    assert server.hits["/down.zip"] == 3
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_retries_a_body_cut_short(server: Server, archive_bytes: bytes, tmp_path: Path) -> None:
    server.routes["/dogs.tar.gz"] = [(0, archive_bytes[:100]), (200, archive_bytes)]
    path = download(f"{server.url}/dogs.tar.gz", tmp_path / "cache", timeout=5)
    assert path.read_bytes() == archive_bytes and server.hits["/dogs.tar.gz"] == 2
    assert list((tmp_path / "cache").iterdir()) == [path]


def test_download_connection_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError, match="after 2 attempt"):
        download(f"http://127.0.0.1:{port}/x.tar", tmp_path / "cache", retries=1, timeout=2)


def test_download_refreshes_a_cached_file_with_the_wrong_checksum(server: Server, archive_bytes: bytes,
                                                                   tmp_path: Path) -> None:
    server.routes["/dogs.tar.gz"] = [(200, archive_bytes)]
    url = f"{server.url}/dogs.tar.gz"
    first = download(url, tmp_path / "cache")
    first.write_bytes(b"corrupted in the cache")
    again = download(url, tmp_path / "cache", hashlib.sha256(archive_bytes).hexdigest())
    assert again == first and again.read_bytes() == archive_bytes and server.hits["/dogs.tar.gz"] == 2


def test_url_that_is_not_an_archive_is_dropped_from_the_cache(server: Server, paths: Paths) -> None:
    server.routes["/page.zip"] = [(200, b"<html>login required</html>")]
    with pytest.raises(FetchError, match="removed from the cache"):
        fetch_dataset(_dataset(f"{server.url}/page.zip"), seed=0, paths=paths)
    assert list(paths.downloads.iterdir()) == []
    _assert_untouched(paths)


def test_download_refuses_other_schemes(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="http"):
        download("file:///etc/passwd", tmp_path)


# --- the stage script --------------------------------------------------------------------------------------

def _run_stage(root: Path, dataset: dict) -> subprocess.CompletedProcess:
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(merge(read_params(SOURCE_PARAMS), {"dataset": dataset})))
    return subprocess.run([sys.executable, str(REPO / "stages" / "fetch.py"), "--root", str(root),
                           "--params", str(params)], capture_output=True, text=True, timeout=120)


def test_stage_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    result = _run_stage(tmp_path, {"source": str(missing)})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0] and "dataset.source" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_stage_synthetic(tmp_path: Path) -> None:
    result = _run_stage(tmp_path, {"source": "synthetic", "synthetic": {"per_class": 2, "image_size": 48}})
    assert result.returncode == 0, result.stderr
    assert len([p for p in (tmp_path / "data" / "raw").iterdir() if p.is_dir()]) == 10


def test_url_tar_cut_at_a_member_boundary_without_content_length_is_refused_not_cached(
        server: Server, paths: Paths, tmp_path: Path) -> None:
    whole = _tar(tmp_path / "dogs.tar", _dog_tree(tmp_path / "dogs"), "w")
    with tarfile.open(whole) as tar:
        boundary = tar.getmembers()[-1].offset
    server.routes["/dogs.tar"] = [(-1, whole.read_bytes()[:boundary]), (-1, whole.read_bytes())]
    url = f"{server.url}/dogs.tar"
    with pytest.raises(FetchError, match=r"truncated archive .*dogs\.tar.* removed from the cache"):
        fetch_dataset(_dataset(url), seed=0, paths=paths)
    assert list(paths.downloads.iterdir()) == [], "the truncated body is not cached"
    _assert_untouched(paths)
    assert fetch_dataset(_dataset(url), seed=0, paths=paths)["counts"] == _expected_tree()
    assert server.hits["/dogs.tar"] == 2
