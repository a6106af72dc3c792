"""Online augmentation: every key changes training inputs and never evaluation inputs; seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vitbench.core import config
from vitbench.data import online, pipeline

STRENGTHS = {"flip": True, "rotation": 30.0, "translate": 0.2, "zoom": 0.3, "brightness": 0.4,
             "contrast": 0.5, "randaugment": 0.6, "erasing": 1.0, "mixup": 0.4, "cutmix": 1.0}
ALL_ON = config.AugmentOnline.only(**STRENGTHS)
CLASSES = 3


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[int]]:
    """12 small PNGs with structure (gradients and a square), so flips and shifts show."""
    root = tmp_path_factory.mktemp("online")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        ramp = np.linspace(0, 255, 16)[None, :, None] * np.ones((16, 16, 3))
        pixels = (ramp + rng.integers(0, 40, (16, 16, 3))).clip(0, 255).astype(np.uint8)
        pixels[2:6, 3:9] = (255, 0, 0)
        paths.append(str(root / f"{i}.png"))
        Image.fromarray(pixels).save(paths[-1])
    return paths, [i % CLASSES for i in range(12)]


def batches(images: tuple[list[str], list[int]], cfg: config.AugmentOnline | None, seed: int = 0,
            epochs: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    augment = online.batch_augmenter(cfg, CLASSES, seed) if cfg is not None else None
    ds = pipeline.make_dataset(*images, 16, "tf", 4, augment=augment)
    return [(x.numpy(), y.numpy()) for _ in range(epochs) for x, y in ds]


def test_all_off_is_no_augmenter() -> None:
    assert online.batch_augmenter(config.AugmentOnline.only(), CLASSES, 0) is None
    assert config.AugmentOnline.only().active == {} and not config.AugmentOnline.only().mixes_labels


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k == "randaugment" else k
                                 for k in STRENGTHS])
def test_each_key_changes_training_inputs_reproducibly(images, key: str) -> None:
    plain = batches(images, None)
    seen = batches(images, config.AugmentOnline.only(**{key: STRENGTHS[key]}), seed=3)
    for (xa, ya), (xb, yb) in zip(seen, batches(images, config.AugmentOnline.only(**{key: STRENGTHS[key]}),
                                                seed=3)):
        np.testing.assert_array_equal(xa, xb)                      # the seed fixes the draws
        np.testing.assert_array_equal(ya, yb)
    x_plain, x_seen = (np.concatenate([x for x, _ in b]) for b in (plain, seen))
    assert x_seen.shape == x_plain.shape and x_seen.dtype == np.float32
    assert not np.allclose(x_seen, x_plain)
    assert x_seen.min() >= -1.0 and x_seen.max() <= 1.0          # still 0..255 before preprocessing
    labels = np.concatenate([y for _, y in seen])
    if key in ("mixup", "cutmix"):                                 # soft one-hot mixtures
        assert labels.shape == (12, CLASSES) and labels.dtype == np.float32
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
        assert ((labels > 0) & (labels < 1)).any()
    else:
        np.testing.assert_array_equal(labels, np.concatenate([y for _, y in plain]))


@pytest.mark.slow
def test_same_seed_same_batches_every_epoch_new_draws(images) -> None:
    cfg = config.AugmentOnline.only(**{**STRENGTHS, "randaugment": 0.0})  # RandAugment: slow to trace
    first, again = batches(images, cfg, seed=5, epochs=2), batches(images, cfg, seed=5, epochs=2)
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    per_epoch = len(first) // 2
    assert not np.allclose(first[0][0], first[per_epoch][0])      # a new draw every epoch
    other = batches(images, cfg, seed=6)
    assert not np.allclose(first[0][0], other[0][0])


@pytest.mark.slow
def test_training_data_augments_train_never_val(tmp_path: Path, monkeypatch) -> None:
    """load_train_data: the train batches follow augment_online, the val batches never do."""
    from test_training import git_repo, make_dataset_tree, tiny_params

    from vitbench.train import phases as training

    root = git_repo(tmp_path / "proj")
    monkeypatch.chdir(root)
    paths = make_dataset_tree(root)

    def load(**cfg: object) -> training.TrainData:
        params = tiny_params(augment_online=cfg)
        return training.load_train_data(params.train, params.seed, paths, 16, "tf",
                                        params.augment_online)

    def first_epoch(ds: tf.data.Dataset) -> np.ndarray:
        return np.concatenate([x.numpy() for x, _ in ds])

    plain, seen = load(), load(**STRENGTHS)
    assert seen.online == ALL_ON and plain.online.active == {} and seen.copies == 1.0
    np.testing.assert_array_equal(first_epoch(seen.val), first_epoch(plain.val))
    assert not np.allclose(first_epoch(seen.train), first_epoch(plain.train))
    for _, y in seen.val:                                          # val labels stay integer ids
        assert y.dtype == tf.int32 and y.shape.rank == 1


def test_evaluation_reads_through_the_unaugmented_pipeline() -> None:
    """make_dataset's default is no augmentation, and evaluation passes none."""
    import inspect

    from vitbench.evaluate import evaluation

    assert inspect.signature(pipeline.make_dataset).parameters["augment"].default is None
    assert "augment" not in inspect.getsource(evaluation)


def test_online_variants_for_the_preview() -> None:
    pics = [np.full((20, 30, 3), v, np.uint8) for v in (10, 120, 240)]
    pics[0][:, :10] = 255
    seen = online.online_variants(ALL_ON, pics, seed=1, count=3, size=24)
    assert [len(v) for v in seen] == [3, 3, 3]
    assert all(v.shape == (24, 24, 3) and v.dtype == np.uint8 for row in seen for v in row)
    assert online.online_variants(ALL_ON, pics, seed=1, count=3, size=24)[0][1].tolist() == \
        seen[0][1].tolist()
    assert online.online_variants(config.AugmentOnline.only(), pics, 1, 3, 24) == [[], [], []]
