"""A full disk (ENOSPC) in any stage is one line naming the stage, the output and the space
needed, never a traceback; the previous output stays as it was and no partial temp is left."""

from __future__ import annotations

import errno
import importlib.util
import io
import shutil
from pathlib import Path

import click
import pytest
import yaml
from PIL import Image

from vitbench.core.config import SOURCE_PARAMS, merge, read_params
from vitbench.data import folders, splitting

REPO = Path(__file__).resolve().parents[1]


def _stage(name: str) -> click.Command:
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run(name: str, root: Path, params: dict, capsys: pytest.CaptureFixture[str]) -> str:
    """Run stage `name` on params.yaml with `params` merged in; its one error line."""
    (root / "params.yaml").write_text(yaml.safe_dump(merge(read_params(SOURCE_PARAMS), params)))
    with pytest.raises(SystemExit) as stop:
        _stage(name).main(["--root", str(root), "--params", str(root / "params.yaml")],
                          standalone_mode=False)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _full_after(limit: int):  # type: ignore[no-untyped-def]
    """A copyfile that writes `limit` files, then half a file and fails as a full disk does."""
    calls = []

    def copy(src: str, dst: str) -> None:
        calls.append(src)
        if len(calls) > limit:
            Path(dst).write_bytes(Path(src).read_bytes()[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        shutil.copyfile(src, dst)
    return copy


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, 9, 9)).save(buf, "PNG")
    return buf.getvalue()


def test_fetch_stage_disk_full_is_one_line_and_keeps_data_raw(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    src, root = tmp_path / "src", tmp_path / "project"
    for cls in ("cat", "dog"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            (src / cls / f"{i}.png").write_bytes(_png(i + len(cls)))
    (root / "data" / "raw" / "old").mkdir(parents=True)
    (root / "data" / "raw" / "old" / "keep.png").write_bytes(_png(9))
    monkeypatch.setattr(folders.shutil, "copyfile", _full_after(2))
    line = _run("fetch", root, {"dataset": {"source": str(src)}}, capsys)
    assert line.startswith("error: fetch: no space left on the device while writing "
                           f"{root / 'data' / 'raw'}: ")
    needed = sum(p.stat().st_size for p in src.rglob("*.png"))
    assert f" free there, the output needs about {needed} bytes" in line
    assert sorted(p.name for p in (root / "data").iterdir()) == ["raw"], "no partial temp left"
    assert (root / "data" / "raw" / "old" / "keep.png").read_bytes() == _png(9)


def test_split_stage_disk_full_names_split_and_its_output(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from test_splitting import make_clean

    from vitbench.core.paths import Paths

    root = tmp_path / "project"
    make_clean(Paths(root), {"a": 6, "b": 6})

    def no_space(df: object, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(splitting, "write_manifest", no_space)
    monkeypatch.chdir(root)  # the manifest lists paths relative to the project
    line = _run("split", root, {"split": {"val": 0.2, "test": 0.2}}, capsys)
    assert line.startswith(f"error: split: no space left on the device while writing "
                           f"{root / 'data' / 'split'} (at {root / 'data'}/.split.tmp-")
    assert not (root / "data" / "split").exists()



def test_disk_full_in_a_download_or_outside_the_atomic_writers_is_one_line_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from vitbench.data import freshness, sources

    def no_space(*args: object, **kwargs: object) -> Path:  # a write that names no file
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(sources, "download", no_space)
    root = tmp_path / "project"
    root.mkdir()
    params = {"dataset": {"source": "http://127.0.0.1:9/a.tar"}}
    line = _run("fetch", root, params, capsys)
    assert line.startswith(f"error: fetch: no space left on the device while writing {root}/data/raw: ")
    assert line.endswith(" free there; free some space and re-run")

    def cache_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(root / ".cache" / "x.bin"))
    monkeypatch.setattr(freshness, "fetch_if_changed", cache_full)
    line = _run("fetch", root, params, capsys)
    assert line.startswith(f"error: fetch: no space left on the device while writing {root}/.cache/x.bin: ")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_a_file_size_limit_in_clean_is_one_line_and_keeps_earlier_outputs(tmp_path: Path) -> None:
    """`ulimit -f` (EFBIG; Python ignores SIGXFSZ) is refused like a full disk: one line naming
    the limit and the output, data/ as it was."""
    import resource
    import signal
    import subprocess
    import sys

    from dvc_project import TINY

    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(merge(read_params(SOURCE_PARAMS), TINY)))

    def stage(name: str, limit: int | None = None) -> subprocess.CompletedProcess:
        def limited() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        return subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py")], cwd=root,
                              capture_output=True, text=True, timeout=300,
                              preexec_fn=limited if limit else None)

    for name in ("fetch", "clean"):
        assert stage(name).returncode == 0
    before = _snapshot(root / "data")
    assert max(len(b) for k, b in before.items() if k.startswith("clean/")) > 4096
    proc = stage("clean", limit=4096)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert errors[0].startswith("error: clean: a file grew past the file-size limit of this "
                                "process (ulimit -f = 4 KB) while writing data/clean: ")
    assert errors[0].endswith("raise the limit (`ulimit -f unlimited`) and re-run")
    assert _snapshot(root / "data") == before
    assert sorted(p.name for p in (root / "data").iterdir()) == ["clean", "raw"], "no temp left"
