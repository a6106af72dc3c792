"""The tf.data input pipeline: shapes, dtypes, preprocessing values, caching, shuffling, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from vitbench.data import pipeline
from vitbench.data.manifest import write_manifest
from vitbench.core.errors import DataError

N = 12
LABEL_GREEN = 60  # green channel = label * LABEL_GREEN, red channel = image index


def _write_images(folder: Path, n: int = N, size: tuple[int, int] = (20, 14)) -> tuple[list[str], list[int]]:
    """n flat-colour PNGs: red = index, green = label * LABEL_GREEN, blue = 200."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for i in range(n):
        label = i % 3
        path = folder / f"img{i:02d}.png"
        Image.new("RGB", size, (i, label * LABEL_GREEN, 200)).save(path)
        paths.append(str(path))
        labels.append(label)
    return paths, labels


@pytest.fixture
def images(tmp_path: Path) -> tuple[list[str], list[int]]:
    return _write_images(tmp_path / "imgs")


def _epoch(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _order(x: np.ndarray) -> list[int]:
    """Image indices (red channel) of an epoch of identity-preprocessed images."""
    return [int(round(v)) for v in x[:, 0, 0, 0]]


def test_shapes_and_dtypes(images):
    paths, labels = images
    ds = pipeline.make_dataset(paths, labels, 16, "tf", batch_size=5)
    batches = list(ds)
    assert [int(x.shape[0]) for x, _ in batches] == [5, 5, 2]
    x, y = batches[0]
    assert x.shape[1:] == (16, 16, 3) and x.dtype == tf.float32
    assert y.dtype == tf.int32
    assert ds.element_spec[0].shape.as_list() == [None, 16, 16, 3]


@pytest.mark.parametrize(("name", "expected"), [
    ("tf", [1.0, -1.0, 128 / 127.5 - 1]),
    ("caffe", [128 - 103.939, 0 - 116.779, 255 - 123.68]),     # BGR, ImageNet means
    ("raw", [255.0, 0.0, 128.0]),
])
def test_preprocess_values(tmp_path, name, expected):
    path = tmp_path / "c.png"
    Image.new("RGB", (9, 9), (255, 0, 128)).save(path)
    x, _ = next(iter(pipeline.make_dataset([str(path)], [0], 8, name, batch_size=1)))
    np.testing.assert_allclose(x.numpy()[0], np.broadcast_to(expected, (8, 8, 3)), atol=1e-4)


def test_preprocess_does_not_modify_numpy_input():
    batch = np.full((1, 2, 2, 3), 200.0, np.float32)
    for fn in pipeline.PREPROCESS.values():
        fn(batch)
    assert (batch == 200.0).all()


def test_unknown_preprocess_is_named(images):
    with pytest.raises(ValueError, match="'imagenet'.*tf, torch, caffe, raw"):
        pipeline.make_dataset(*images, 8, "imagenet", batch_size=2)


def test_decodes_each_file_once_then_serves_the_cache(images):
    paths, labels = images
    ds = pipeline.make_dataset(paths, labels, 8, "raw", batch_size=4, shuffle=True, seed=1)
    first_x, first_y = _epoch(ds)
    for p in paths:
        Path(p).unlink()  # a second read would now fail
    second_x, second_y = _epoch(ds)
    assert sorted(_order(second_x)) == sorted(_order(first_x)) == list(range(N))
    np.testing.assert_array_equal(np.sort(second_y), np.sort(first_y))


def test_without_cache_files_are_read_again(images):
    paths, labels = images
    ds = pipeline.make_dataset(paths, labels, 8, "raw", batch_size=4, cache=False)
    _epoch(ds)
    Path(paths[0]).unlink()
    with pytest.raises(tf.errors.NotFoundError):
        _epoch(ds)


def test_no_shuffle_keeps_input_order(images):
    x, y = _epoch(pipeline.make_dataset(*images, 8, "raw", batch_size=5))
    assert _order(x) == list(range(N))
    assert list(y) == images[1]


def test_seeded_shuffle_is_reproducible_and_reshuffles_each_epoch(images):
    def two_epochs(seed: int) -> list[list[int]]:
        ds = pipeline.make_dataset(*images, 8, "raw", batch_size=5, shuffle=True, seed=seed)
        return [_order(_epoch(ds)[0]) for _ in range(2)]

    a, b, other = two_epochs(3), two_epochs(3), two_epochs(4)
    assert a == b                       # same seed, same sequence of epochs
    assert a[0] != a[1]                 # a new order every epoch
    assert a != other                   # another seed, other orders
    assert sorted(a[0]) == list(range(N))


def test_labels_stay_with_their_images(images):
    ds = pipeline.make_dataset(*images, 8, "raw", batch_size=5, shuffle=True, seed=7)
    for _ in range(2):
        x, y = _epoch(ds)
        np.testing.assert_array_equal(np.round(x[:, 0, 0, 1] / LABEL_GREEN).astype(int), y)
        np.testing.assert_array_equal(y, [images[1][i] for i in _order(x)])


def test_dataset_from_manifest(tmp_path, images):
    paths, labels = images
    classes = ["cat", "dog", "owl"]
    csv = tmp_path / "split" / "val.csv"
    write_manifest(pd.DataFrame({"path": paths, "class": [classes[i] for i in labels]}), csv)
    x, y = _epoch(pipeline.dataset_from_manifest(csv, classes, 8, "raw", 4))
    assert _order(x) == list(range(N)) and list(y) == labels
    with pytest.raises(DataError, match="'owl'.*val.csv|val.csv.*'owl'"):
        pipeline.dataset_from_manifest(csv, ["cat", "dog"], 8, "tf", 4)


def test_load_images_matches_the_dataset(tmp_path):
    paths, labels = _write_images(tmp_path / "imgs", n=5, size=(31, 17))
    # a gradient, so resizing actually interpolates
    grad = np.linspace(0, 255, 31 * 17 * 3).reshape(17, 31, 3).astype(np.uint8)
    Image.fromarray(grad).save(paths[0])
    arr = pipeline.load_images(paths, 12, batch_size=2)
    assert arr.shape == (5, 12, 12, 3) and arr.dtype == np.uint8
    x, _ = _epoch(pipeline.make_dataset(paths, labels, 12, "raw", 3))
    np.testing.assert_array_equal(arr, x.astype(np.uint8))


def test_missing_file_and_bad_lengths_are_clear_errors(images):
    paths, labels = images
    with pytest.raises(DataError, match="nowhere.png"):
        pipeline.make_dataset(paths + ["/nowhere.png"], labels + [0], 8, "tf", 4)
    with pytest.raises(DataError, match="12 image paths but 11 labels"):
        pipeline.make_dataset(paths, labels[:-1], 8, "tf", 4)
    with pytest.raises(DataError, match="empty"):
        pipeline.load_images([], 8)
