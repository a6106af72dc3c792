"""train.cache: memory, disk (a tf.data file cache), none, and auto's choice from the free memory."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from test_pipeline import _epoch, _write_images
from vitbench.models.registry import params_with
from vitbench.data import pipeline
from vitbench.core.errors import ConfigError

MODES = ("memory", "disk", "none", "auto")


def _dataset(paths: list[str], labels: list[int], mode: str, cache_dir: Path):
    return pipeline.make_dataset(paths, labels, 8, "raw", batch_size=5, shuffle=True,
                                 seed=3, cache=mode, cache_dir=cache_dir)


def test_every_mode_yields_the_same_batches(tmp_path: Path) -> None:
    paths, labels = _write_images(tmp_path / "imgs")
    epochs = {}
    for mode in MODES:
        ds = _dataset(paths, labels, mode, tmp_path / f"cache-{mode}")
        epochs[mode] = [_epoch(ds) for _ in range(2)]
    for mode in MODES[1:]:
        for (x0, y0), (x1, y1) in zip(epochs["memory"], epochs[mode]):
            np.testing.assert_array_equal(x0, x1, err_msg=mode)
            np.testing.assert_array_equal(y0, y1, err_msg=mode)
    first, second = epochs["memory"]
    assert not np.array_equal(first[1], second[1])  # reshuffled every epoch, in every mode alike


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_modes_read_each_file_once(tmp_path: Path, mode: str) -> None:
    paths, labels = _write_images(tmp_path / "imgs")
    ds = _dataset(paths, labels, mode, tmp_path / "cache")
    first = _epoch(ds)
    for p in paths:  # from now on only the cache holds the images
        Path(p).unlink()
    np.testing.assert_array_equal(np.sort(first[0], axis=0), np.sort(_epoch(ds)[0], axis=0))
    written = sorted(f.name for f in (tmp_path / "cache").glob("*")) if mode == "disk" else []
    assert (mode == "disk") == any(name.endswith(".index") for name in written), written


def test_none_decodes_at_every_epoch(tmp_path: Path) -> None:
    paths, labels = _write_images(tmp_path / "imgs")
    ds = _dataset(paths, labels, "none", tmp_path / "cache")
    _epoch(ds)
    Path(paths[0]).unlink()
    with pytest.raises(Exception, match="img00"):
        _epoch(ds)
    assert not (tmp_path / "cache").exists()


def test_disk_cache_is_reused_and_follows_the_data(tmp_path: Path) -> None:
    paths, labels = _write_images(tmp_path / "imgs")
    cache_dir = tmp_path / "cache"
    arr = np.asarray(labels, np.int32)
    prefix = pipeline.disk_cache_prefix(cache_dir, paths, arr, 8)
    assert prefix == pipeline.disk_cache_prefix(cache_dir, paths, arr, 8)
    assert prefix != pipeline.disk_cache_prefix(cache_dir, paths, arr, 16)
    _epoch(_dataset(paths, labels, "disk", cache_dir))
    assert prefix.with_name(prefix.name + ".index").is_file()
    _write_images(tmp_path / "imgs", size=(30, 14))  # the same files, new content
    assert prefix != pipeline.disk_cache_prefix(cache_dir, paths, arr, 8)


def test_an_unfinished_disk_cache_is_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths, labels = _write_images(tmp_path / "imgs")
    arr = np.asarray(labels, np.int32)
    prefix = pipeline.disk_cache_prefix(tmp_path / "cache", paths, arr, 8)
    lock = prefix.with_name(prefix.name + "_0.lockfile")
    lock.write_text("a killed run")  # tf.data refuses to write a cache whose lock file exists
    with caplog.at_level(logging.WARNING, logger="vitbench.data.pipeline"):
        x, _ = _epoch(_dataset(paths, labels, "disk", tmp_path / "cache"))
    assert len(x) == len(paths) and not lock.exists()
    assert "unfinished disk cache" in caplog.text


def test_auto_picks_memory_when_the_images_fit_and_disk_when_not() -> None:
    size = pipeline.decoded_bytes(12_000, 224)  # the Stanford Dogs preset: ~1.8 GB
    assert pipeline.choose_cache("auto", 12_000, 224, available=int(16e9)) == "memory"
    assert pipeline.choose_cache("auto", 12_000, 224, available=size) == "disk"  # > half of it
    assert pipeline.choose_cache("auto", 12_000, 224, available=2 * size) == "memory"
    assert pipeline.choose_cache("disk", 1, 8, available=int(1e12)) == "disk"
    assert pipeline.available_memory() > 0
    with pytest.raises(ValueError, match="tape"):
        pipeline.choose_cache("tape", 1, 8)


def test_auto_writes_a_disk_cache_and_logs_it_when_memory_is_small(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    paths, labels = _write_images(tmp_path / "imgs")
    monkeypatch.setattr(pipeline, "available_memory", lambda: 1_000)  # 12 images of 8px need 2,304 B
    with caplog.at_level(logging.INFO, logger="vitbench.data.pipeline"):
        x, _ = _epoch(_dataset(paths, labels, "auto", tmp_path / "cache"))
    assert len(x) == len(paths)
    assert "cache auto -> disk" in caplog.text
    assert list((tmp_path / "cache").glob("*.index"))


def test_train_cache_is_validated() -> None:
    assert params_with({"train": {"cache": "disk"}}).train.cache == "disk"
    assert params_with({}).train.cache == "auto"   # params.yaml's
    with pytest.raises(ConfigError, match=r"train\.cache.*'auto' or 'memory' or 'disk' or 'none'"):
        params_with({"train": {"cache": "ram"}})
